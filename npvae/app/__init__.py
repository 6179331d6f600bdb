"""The application around the library: settings, run folders, checkpoints, resume,
evaluation reports, figures' drawing, threads and warm-up (see docs/README.md)."""
