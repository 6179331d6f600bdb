/* Round trip of one cache line between the two cores this machine gives us, in ns.
 *
 * Two threads, pinned to cores 0 and 1, hand a counter back and forth 200,000 times;
 * it prints the mean round trip of each of ROUNDS tries (argv[1], default 20), 0.2 s
 * apart.  About 75 ns means the two cores share a last-level cache; about 330 ns
 * means they do not, and the host moves a VM's cores between the two placements.
 * bench_steady.py compiles it with the C compiler, if there is one, to say which
 * placement each of its runs had.  Build by hand: cc -O2 -pthread cache_latency.c
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdatomic.h>
#include <time.h>
#include <stdlib.h>
static _Atomic long flag __attribute__((aligned(64)));
static int N = 200000;
static void pin(int c){cpu_set_t s;CPU_ZERO(&s);CPU_SET(c,&s);pthread_setaffinity_np(pthread_self(),sizeof s,&s);}
static void* pong(void*a){pin(1);for(long i=0;i<N;i++){while(atomic_load_explicit(&flag,memory_order_acquire)!=2*i+1);atomic_store_explicit(&flag,2*i+2,memory_order_release);}return 0;}
int main(int argc,char**argv){int rounds=argc>1?atoi(argv[1]):20;
 for(int r=0;r<rounds;r++){atomic_store(&flag,0);pthread_t t;pthread_create(&t,0,pong,0);pin(0);
 struct timespec a,b;clock_gettime(CLOCK_MONOTONIC,&a);
 for(long i=0;i<N;i++){atomic_store_explicit(&flag,2*i+1,memory_order_release);while(atomic_load_explicit(&flag,memory_order_acquire)!=2*i+2);}
 clock_gettime(CLOCK_MONOTONIC,&b);pthread_join(t,0);
 double ns=((b.tv_sec-a.tv_sec)*1e9+(b.tv_nsec-a.tv_nsec))/N;printf("%.0f ",ns);fflush(stdout);
 struct timespec z={0,200000000};nanosleep(&z,0);}
 printf("\n");}
