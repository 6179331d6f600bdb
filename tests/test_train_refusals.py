"""Issue 10's table: every flag acts or is refused, every error names the real cause.

Each case is a command of ``python -m npvae.train`` (run in this process) on the
tiny MNIST, with the exact exit status and the key words its one line on stderr
must hold.  A refused command changes nothing: the data folder and the run
folder hash the same before and after it.

Two runs are made once for the module and copied for each case: ``done`` (a
VAE trained for 1 epoch) and ``stopped`` (a VAE stopped by SIGINT in epoch 2,
after its 2nd batch, so its checkpoint holds an interrupted epoch's record).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from damage import (
    drop_member,
    duplicate_first_member,
    edit_array,
    edit_header,
    members,
    npy_header_claiming,
    replace_member,
    rezip,
)
from train_support import (
    SMALL,
    SMALL_AE,
    isolate,
    one_line,
    only_run,
    run_main,
    tiny_spec,
    write_tiny_mnist,
)

from npvae import train
from npvae.data import sources
from npvae.models import VAE

LABELS = "train-labels-idx1-ubyte.gz"
IMAGES = "train-images-idx3-ubyte.gz"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """``(data folder, checksums, done run, stopped run)``, made once."""
    root = tmp_path_factory.mktemp("refusals")
    data = root / "data"
    checksums = write_tiny_mnist(data)
    with pytest.MonkeyPatch.context() as patch:
        isolate(patch, root)
        patch.setitem(sources.DATASETS, "mnist", tiny_spec(checksums))
        base = ["--dataset", "mnist", "--data-dir", str(data), *SMALL]
        assert train.main([*base, "--out", str(root / "done"), "--epochs", "1"]) == 0
        original, calls = VAE.loss, []

        def loss(self, x, rng=None, **options):
            if options.get("grad", True):
                calls.append(1)
                if len(calls) == 4 + 2:  # epoch 2, its 2nd batch
                    os.kill(os.getpid(), signal.SIGINT)
            return original(self, x, rng, **options)

        patch.setattr(VAE, "loss", loss)
        assert train.main([*base, "--out", str(root / "stopped"), "--epochs", "3"]) == 130
    return data, checksums, only_run(root / "done"), only_run(root / "stopped")


@dataclass
class Place:
    """What a case works on: copies of the data folder and the two runs."""

    data: Path
    done: Path
    stopped: Path
    tmp: Path

    def last(self, run: str = "done") -> Path:
        return getattr(self, run) / "checkpoints" / "last.npz"

    def new(self, *flags) -> list:
        """A new run's flags: small, on the tiny MNIST, with ``flags`` last."""
        model = flags[flags.index("--model") + 1] if "--model" in flags else "vae"
        small = SMALL if model in ("vae", "iwae") else SMALL_AE
        return ["--dataset", "mnist", "--data-dir", self.data, "--out", self.tmp / "runs",
                *small, "--epochs", "1", *flags]  # fmt: skip


@pytest.fixture
def place(made, tmp_path, monkeypatch):
    data, checksums, done, stopped = made
    isolate(monkeypatch, tmp_path)
    monkeypatch.setitem(sources.DATASETS, "mnist", tiny_spec(checksums))
    copies = Place(tmp_path / "data", tmp_path / "done", tmp_path / "stopped", tmp_path)
    shutil.copytree(data, copies.data)
    shutil.copytree(done, copies.done)
    shutil.copytree(stopped, copies.stopped)
    return copies


def tree_hash(folder: Path) -> str:
    """One digest of every file's path and bytes under ``folder`` (absent: a fixed mark)."""
    digest = hashlib.sha256()
    if not folder.exists():
        return "absent"
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def set_byte(path: Path, offset: int, value: int) -> None:
    """Set one byte of an IDX file's decompressed content (the file stays gzip)."""
    import gzip

    content = bytearray(gzip.decompress(path.read_bytes()))
    content[offset] = value
    path.write_bytes(gzip.compress(bytes(content)))


def add_member(path: Path, name: str) -> None:
    """Add a small, valid array under ``name`` to an npz file."""
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3, np.float32))
    rezip(path, [*members(path), (name, buffer.getvalue())])


def header(run: str, edit):
    """A case's setup: edit the JSON header of the run's last.npz."""
    return lambda p: edit_header(p.last(run), edit)


def setting(key, value, run="done"):
    return header(run, lambda h: h["config"].__setitem__(key, value))


def model_setting(key, value):
    return header("done", lambda h: h["model"]["config"].__setitem__(key, value))


def partial(edit):
    return header("stopped", lambda h: edit(h["extra"]["partial"]))


def resume(run: str = "done", *flags):
    """``--resume RUN``, asking the finished run for one epoch more (else nothing to do)."""
    more = ["--epochs", "2"] if run == "done" and "--epochs" not in flags else []
    return lambda p: ["--resume", getattr(p, run), *more, *flags]


def write(name: str, text: str):
    def make(p):
        (p.tmp / name).write_text(text)

    return make


# (id, setup(place) -> None, argv(place) -> list, status, key words of the stderr line)
CASES = [
    # ----- settings that would be silently ignored: refused in one line
    ("contractive-relu", None, lambda p: p.new("--model", "contractive-ae", "--hidden", "none",
     "--activation", "relu"), 2, ["--activation sigmoid or tanh", "not relu"]),
    ("k-off-iwae", None, lambda p: p.new("--model", "vae", "--k", "7"), 2,
     ["--k has no effect", "--model iwae or iwae2 only"]),
    ("samples-off-vae", None, lambda p: p.new("--model", "iwae", "--samples", "2"), 2,
     ["--samples has no effect", "--model vae only"]),
    ("beta-off-vae", None, lambda p: p.new("--model", "iwae", "--beta", "0.5"), 2,
     ["--beta has no effect"]),
    ("learn-var-bernoulli", None, lambda p: p.new("--learn-var"), 2,
     ["--learn-var has no effect", "--likelihood gaussian"]),
    ("learn-var-ae", None, lambda p: p.new("--model", "ae", "--likelihood", "gaussian",
     "--learn-var"), 2, ["--learn-var has no effect", "a vae, iwae or iwae2"]),
    ("no-learn-var-ae", None, lambda p: p.new("--model", "ae", "--no-learn-var"), 2,
     ["--no-learn-var has no effect"]),
    ("noise-off-denoising", None, lambda p: p.new("--noise", "gaussian"), 2,
     ["--noise has no effect", "--model denoising-ae only"]),
    ("sparsity-off-sparse", None, lambda p: p.new("--model", "ae", "--sparsity-weight", "1"), 2,
     ["--sparsity-weight has no effect", "--model sparse-ae only"]),
    ("contraction-off-contractive", None, lambda p: p.new("--contraction", "0.5"), 2,
     ["--contraction has no effect", "--model contractive-ae only"]),
    ("lr-step-off-step", None, lambda p: p.new("--lr-step", "3"), 2,
     ["--lr-step has no effect", "--schedule step only"]),
    ("ll-samples-off-generative", None, lambda p: p.new("--model", "ae", "--ll-samples", "5"), 2,
     ["--ll-samples has no effect", "--model vae, iwae or iwae2"]),
    ("activation-without-hidden", None, lambda p: p.new("--model", "ae", "--hidden", "none",
     "--activation", "tanh"), 2, ["--activation has no effect", "hidden layers"]),
    ("data-dir-off-digits", None, lambda p: ["--dataset", "digits", "--data-dir", p.data], 2,
     ["--data-dir has no effect"]),
    ("toml-k-off-iwae", write("run.toml", "k = 5\n"),
     lambda p: p.new("--config", p.tmp / "run.toml"), 2, ["run.toml: k has no effect"]),
    # ----- messages that name the real cause
    ("resume-nowhere", None, lambda p: ["--resume", p.tmp / "nowhere"], 2,
     ["--resume", "nowhere: no such folder"]),
    ("resume-no-config-json", lambda p: (p.done / "config.json").unlink(), resume(), 2,
     ["has no config.json"]),
    ("resume-damaged-config-json", lambda p: (p.done / "config.json").write_text("{"), resume(),
     2, ["config.json is damaged"]),
    ("resume-flag-as-typed", None, resume("done", "--no-learn-var", "--batch-size", "8"), 2,
     ["--no-learn-var, --batch-size cannot be given", "--figures/--no-figures"]),
    ("resume-lr-with-nothing-to-train", None, resume("done", "--epochs", "1", "--lr", "0.1"),
     2, ["has no epochs left to train and has its results", "--lr would change nothing"]),
    ("resume-from-best-nothing-to-train", None, resume("done", "--epochs", "1", "--from", "best"),
     2, ["best.npz has 1 epoch;", "give --epochs more than 1", "npvae.evaluate"]),
    ("resume-from-nonsense", None, resume("done", "--from", "worst"), 2,
     ["--from 'worst' is not one of: last, best"]),
    ("from-without-resume", None, lambda p: p.new("--from", "best"), 2, ["give --resume too"]),
    ("data-dir-missing-a-file", lambda p: (p.data / LABELS).unlink(), lambda p: p.new(), 2,
     [f"no {LABELS[:-3]}(.gz) for dataset mnist", "--data-dir"]),
    ("text-as-checkpoint", lambda p: p.last().write_text("not a zip\n" * 50), resume(), 2,
     ["last.npz: not an npvae file", "--from best"]),
    # ----- checkpoints that are valid zips but wrong inside
    ("npy-declares-16GiB", lambda p: replace_member(p.last(), "model/decoder.0.W.npy",
     npy_header_claiming((2**17, 2**15))), resume(), 2, ["last.npz", "declares shape"]),
    ("member-without-npy-magic", lambda p: replace_member(p.last(), "optim/lr.npy", b"x" * 99),
     resume(), 2, ["last.npz", "optim/lr.npy is not a readable array"]),
    ("stray-array", lambda p: add_member(p.last(), "junk.npy"), resume(), 2,
     ["unexpected arrays ['junk']"]),
    ("duplicate-member", lambda p: duplicate_first_member(p.last()), resume(), 2,
     ["last.npz", "twice"]),
    ("epoch-negative", header("done", lambda h: h.update(epoch=-1)), resume(), 2,
     ["last.npz", "epoch is -1"]),
    ("step-negative", header("done", lambda h: h.update(step=-5)), resume(), 2,
     ["step is -5"]),
    ("step-text", header("done", lambda h: h.update(step="5")), resume(), 2, ["step is '5'"]),
    ("step-off-by-one", header("done", lambda h: h.update(step=5)), resume(), 2,
     ["step 5 does not match epoch 1"]),
    ("best-text", header("done", lambda h: h["extra"].update(best="low")), resume(), 2,
     ["best loss 'low' is not a number"]),
    ("partial-without-batch", partial(lambda r: r.pop("batch")), resume("stopped"), 2,
     ["record has keys ['n', 'sums']"]),
    ("partial-batch-text", partial(lambda r: r.update(batch="2")), resume("stopped"), 2,
     ["interrupted after batch '2'"]),
    ("partial-sums-without-kl", partial(lambda r: r["sums"].pop("kl")), resume("stopped"), 2,
     ["sums", "are not loss, recon and kl"]),
    ("rng-overflow", header("done", lambda h: h["rng"].update(has_uint32=10**30)), resume(), 2,
     ["damaged random-generator state"]),
    ("partial-a-list", header("stopped", lambda h: h["extra"].update(partial=[1, 2])),
     resume("stopped"), 2, ["record is list, not a table"]),
    ("partial-without-order", lambda p: drop_member(p.last("stopped"), "run/order.npy"),
     resume("stopped"), 2, ["no batch order"]),
    ("order-not-a-permutation", lambda p: edit_array(p.last("stopped"), "run/order",
     lambda a: a.fill(0)), resume("stopped"), 2, ["not a permutation"]),
    ("config-without-lr", header("done", lambda h: h["config"].pop("lr")), resume(), 2,
     ["setting ['lr'] is missing"]),
    ("config-beta-nan", setting("beta", float("nan")), resume(), 2, ["beta must be a finite"]),
    ("config-claims-k", setting("k", 7), resume(), 2, ["k is 7, but it has no effect"]),
    ("config-latent-not-the-models", setting("latent", 10**30), resume(), 2,
     ["its model is not the one its run settings describe"]),
    ("config-json-dataset-a-number", lambda p: (p.done / "config.json").write_text(
     json.dumps({**json.loads((p.done / "config.json").read_text()), "dataset_used": 5})),
     resume(), 2, ["config.json is damaged"]),
    ("rng-not-a-bit-generator", header("done", lambda h: h["rng"].update(bit_generator="seed")),
     resume(), 2, ["damaged random-generator state"]),
    ("config-epochs-text", setting("epochs", "3"), resume(), 2,
     ["epochs must be a whole number"]),
    ("model-n-samples-1.5", model_setting("n_samples", 1.5), resume(), 2,
     ["n_samples must be a whole number"]),
    ("model-learned-var-yes", model_setting("learned_var", "yes"), resume(), 2,
     ["learned_var must be true or false"]),
    ("model-input-dim-text", model_setting("input_dim", "784"), resume(), 2,
     ["input_dim must be a whole number"]),
    ("model-absurd-sizes", model_setting("hidden", [10**12]), resume(), 2,
     ["describes a vae of", "parameters"]),
    ("model-kind-a-list", header("done", lambda h: h["model"].update(kind=["vae"])), resume(), 2,
     ["not an npvae model"]),
    ("model-a-string", header("done", lambda h: h.update(model="vae")), resume(), 2,
     ["model record is a str"]),
    ("weight-nan", lambda p: edit_array(p.last(), "model/decoder.0.W",
     lambda a: a.__setitem__((0, 0), np.nan)), resume(), 2, ["decoder.0.W holds nan"]),
    ("weight-huge", lambda p: edit_array(p.last(), "model/decoder.0.b",
     lambda a: a.__setitem__(0, 1e30)), resume(), 2, ["decoder.0.b holds 1e+30", "above 1e+06"]),
    ("adam-v-negative", lambda p: edit_array(p.last(), "optim/v/decoder.0.W",
     lambda a: a.__setitem__((0, 0), -1.0)), resume(), 2, ["'v/decoder.0.W' must be finite and"]),
    ("adam-m-nan", lambda p: edit_array(p.last(), "optim/m/encoder.0.b",
     lambda a: a.__setitem__(0, np.nan)), resume(), 2, ["'m/encoder.0.b' must be finite"]),
    # ----- IDX files whose header lies (byte 3 of the labels file, as the fuzz found)
    *[
        (f"labels-byte3-{value}", lambda p, v=value: set_byte(p.data / LABELS, 3, v),
         lambda p: p.new(), 2, [LABELS, f"byte 3) says {value} dimensions", "a labels file"])
        for value in (0, 2, 3, 5, 255)
    ],
    ("images-byte3-4", lambda p: set_byte(p.data / IMAGES, 3, 4), lambda p: p.new(), 2,
     [IMAGES, "says 4 dimensions", "an images file"]),
    ("images-count-huge", lambda p: set_byte(p.data / IMAGES, 4, 0x7F), lambda p: p.new(), 2,
     [IMAGES, "header promises"]),
]  # fmt: skip


@pytest.mark.filterwarnings("ignore:Duplicate name")  # zipfile's, as a case writes the copy
@pytest.mark.parametrize(("setup", "argv", "status", "words"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])  # fmt: skip
def test_each_refusal_is_one_line_with_its_cause_and_changes_nothing(
    setup, argv, status, words, place, capsys
):
    if setup is not None:
        setup(place)
    folders = (place.data, place.done, place.stopped, place.tmp / "runs")
    before = [tree_hash(folder) for folder in folders]
    got, stdout, stderr = run_main(argv(place), capsys)
    line = one_line(stderr)
    assert got == status, line
    assert line.startswith("error: ")
    for word in words:
        assert word in line, (word, line)
    assert "reduce --batch-size" not in line and "allow_pickle" not in line
    assert [tree_hash(folder) for folder in folders] == before


def test_the_table_has_a_case_for_each_kind_of_fault():
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids))
    for needed in ("contractive-relu", "learn-var-bernoulli", "resume-nowhere",
                   "npy-declares-16GiB", "partial-without-order", "labels-byte3-3"):  # fmt: skip
        assert needed in ids


# ----- what does work -------------------------------------------------------------------


def test_contractive_ae_takes_tanh_and_records_only_what_acts(place, capsys):
    argv = ["--dataset", "mnist", "--data-dir", place.data, "--out", place.tmp / "runs",
            "--model", "contractive-ae", "--latent", "2", "--batch-size", "64", "--no-figures",
            "--epochs", "1"]  # fmt: skip
    for activation in ("tanh", None):
        out = place.tmp / f"runs-{activation}"
        flags = ["--activation", activation] if activation else []
        status, _, stderr = run_main([*argv, "--out", out, *flags], capsys)
        assert status == 0, stderr
        run = only_run(out)
        config = json.loads((run / "config.json").read_text())
        assert config["activation"] == (activation or "sigmoid")
        saved = json.loads((run / "config.json").read_text())
        from npvae.app.checkpoint import load_checkpoint

        model = load_checkpoint(run / "checkpoints" / "last.npz").model
        assert model.config["code_activation"] == (activation or "sigmoid")
        for name in ("k", "samples", "beta", "ll_samples", "noise", "sparsity", "lr_step"):
            assert saved[name] is None, name  # no effect on this run, so no claim
        assert saved["contraction"] == 0.1


def test_the_version():
    import subprocess
    import sys

    import npvae

    for module in ("npvae", "npvae.train"):
        done = subprocess.run(
            [sys.executable, "-m", module, "--version"], capture_output=True, text=True
        )
        assert done.returncode == 0 and done.stdout == f"npvae {npvae.__version__}\n", done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "npvae", "--bogus"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert one_line(done.stderr).startswith("error: python -m npvae takes only --version")


@pytest.mark.parametrize(
    "stem", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"],
)  # fmt: skip
def test_every_value_of_the_dimension_byte_through_the_cli(stem, place, capsys):
    """Byte 3 of each of the four files set to each wrong value: one line naming the file
    and the fault, status 2, and no run folder (that nothing the header asks for is
    allocated first is test_data_idx's every-value test)."""
    import gzip

    path = place.data / f"{stem}.gz"
    content = bytearray(gzip.decompress(path.read_bytes()))
    right = content[3]
    kind = "a labels file" if "labels" in stem else "an images file"
    for value in range(256):
        if value == right:
            continue
        content[3] = value
        path.write_bytes(gzip.compress(bytes(content), compresslevel=1))
        status, stdout, stderr = run_main(place.new(), capsys)
        line = one_line(stderr)
        assert status == 2, line
        dimensions = "1 dimension;" if value == 1 else f"{value} dimensions"
        assert line.startswith(f"error: {path}: IDX header (byte 3) says {dimensions}")
        assert kind in line
    assert not (place.tmp / "runs").exists()
