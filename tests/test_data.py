import functools
import hashlib
import io
import json
import pickle
import subprocess
import sys
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import CIFAR10

from l1cert.config import DataConfig
from l1cert.data import dataset_info, load_split, prepare
from l1cert.utils import L1CertError

# --- digits --------------------------------------------------------------------------------


def test_digits_split_is_fixed_stratified_and_in_unit_range():
    train, test = load_split("digits", "train"), load_split("digits", "test")
    assert (len(train), len(test)) == (1437, 360)  # 80/20 of the 1797 scans
    x, label = test[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and isinstance(label, int)
    assert train.images.min() == 0 and train.images.max() == 1
    # Stratified: every class keeps its share of the test split to within one image.
    full = np.bincount(train.targets + test.targets, minlength=10)
    assert np.abs(np.bincount(test.targets, minlength=10) - full * 0.2).max() <= 1
    # The pixels are sklearn's 0..16 counts divided by 16.
    assert torch.equal(test.images * 16, (test.images * 16).round())
    again = load_split("digits", "test")
    assert torch.equal(again.images, test.images) and again.targets == test.targets


def test_digits_info_is_measured_on_the_train_split():
    info = dataset_info("digits")
    images = load_split("digits", "train").images
    assert (info.num_classes, info.input_shape) == (10, [1, 8, 8])
    assert info.mean[0] == pytest.approx(images.mean().item(), rel=1e-5)
    assert info.std[0] == pytest.approx(images.std().item(), rel=1e-3)


def test_digits_manifest_counts_and_checksum(tmp_path):
    doc = prepare(tmp_path / "m.json", DataConfig(dataset="digits", root=str(tmp_path)))
    assert json.loads((tmp_path / "m.json").read_text()) == doc
    assert sum(doc["splits"]["test"]["per_class"].values()) == doc["splits"]["test"]["images"]
    assert (
        doc["splits"]["train"]["per_class"]["0"]
        == np.bincount(load_split("digits", "train").targets)[0]
    )
    assert (
        prepare(tmp_path / "m2.json", DataConfig(dataset="digits", root=str(tmp_path)))["checksum"]
        == doc["checksum"]
    )


def test_unknown_dataset_and_split():
    with pytest.raises(L1CertError, match="unknown dataset"):
        load_split("mnist", "train")
    with pytest.raises(L1CertError, match="unknown split"):
        load_split("digits", "validation")


# --- cifar10: the real archive layout, served from a local file -----------------------------


def _cifar_archive(path, per_batch=4):
    """A cifar-10-python.tar.gz in the real layout: pickled batches and batches.meta."""
    rng = np.random.default_rng(0)
    members = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        members[name] = {
            "batch_label": name,
            "labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "filenames": [f"{name}_{i}.png" for i in range(per_batch)],
        }
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    members["batches.meta"] = {"label_names": names, "num_cases_per_batch": per_batch}
    md5s = {}
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in members.items():
            blob = pickle.dumps(obj, protocol=2)
            md5s[name] = hashlib.md5(blob).hexdigest()
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return members, md5s


@pytest.fixture
def cifar_source(tmp_path, monkeypatch):
    """Point torchvision's CIFAR-10 download at a local HTTP server holding a small archive."""
    archive = tmp_path / "source" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    members, md5s = _cifar_archive(archive)
    handler = functools.partial(QuietHandler, directory=str(archive.parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1")
    url = f"http://127.0.0.1:{server.server_address[1]}/{archive.name}"
    monkeypatch.setattr(CIFAR10, "url", url)
    monkeypatch.setattr(CIFAR10, "tgz_md5", hashlib.md5(archive.read_bytes()).hexdigest())
    batches = [[f"data_batch_{i}", md5s[f"data_batch_{i}"]] for i in range(1, 6)]
    monkeypatch.setattr(CIFAR10, "train_list", batches)
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5s["test_batch"]]])
    meta = {"filename": "batches.meta", "key": "label_names", "md5": md5s["batches.meta"]}
    monkeypatch.setattr(CIFAR10, "meta", meta)
    yield members
    server.shutdown()
    server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_cifar10_downloads_verifies_and_loads(tmp_path, cifar_source):
    root = tmp_path / "data"
    test = load_split("cifar10", "test", root=root)
    assert (root / "cifar10" / "cifar-10-python.tar.gz").is_file()
    assert len(test) == 4 and len(load_split("cifar10", "train", root=root)) == 20
    x, label = test[1]
    raw = cifar_source["test_batch"]["data"][1].reshape(3, 32, 32)
    assert torch.allclose(x, torch.from_numpy(raw).float() / 255)
    assert label == cifar_source["test_batch"]["labels"][1]
    augmented, _ = load_split("cifar10", "train", root=root, augment=True)[0]
    assert augmented.shape == (3, 32, 32) and 0 <= augmented.min() and augmented.max() <= 1
    doc = prepare(tmp_path / "m.json", DataConfig(dataset="cifar10", root=str(root)))
    assert doc["splits"]["train"]["images"] == 20 and doc["input_shape"] == [3, 32, 32]
    assert doc["splits"]["test"]["per_class"]["airplane"] == cifar_source["test_batch"][
        "labels"
    ].count(0)


def test_cifar10_checksum_failure_says_where_to_put_it(tmp_path, cifar_source, monkeypatch):
    monkeypatch.setattr(CIFAR10, "tgz_md5", "0" * 32)  # the served file no longer matches
    folder = tmp_path / "data" / "cifar10"
    with pytest.raises(L1CertError, match="cifar-10-python.tar.gz") as err:
        load_split("cifar10", "test", root=tmp_path / "data")
    assert str(folder) in str(err.value) and "\n" not in str(err.value)


def test_cifar10_offline_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    with pytest.raises(L1CertError, match="put cifar-10-python.tar.gz into"):
        load_split("cifar10", "train", root=tmp_path)


# --- image folders -------------------------------------------------------------------------


def _image_tree(top, splits, per_class=2, size=(12, 10)):
    rng = np.random.default_rng(1)
    for split in splits:
        for cls in ("cat", "dog"):
            (top / split / cls).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(top / split / cls / f"{i}.png")


def test_imagefolder_loads_resized_images(tmp_path):
    _image_tree(tmp_path / "imagefolder", ("train", "test"), per_class=3)
    test = load_split("imagefolder", "test", root=tmp_path, image_size=16)
    x, label = test[4]
    assert x.shape == (3, 16, 16) and label == 1 and 0 <= x.min() and x.max() <= 1
    train = load_split("imagefolder", "train", root=tmp_path, image_size=16, augment=True)
    assert train[0][0].shape == (3, 16, 16)
    info = dataset_info("imagefolder", root=tmp_path, image_size=16)
    assert (info.num_classes, info.input_shape) == (2, [3, 16, 16])


def test_sixteen_bit_grey_images_are_read_at_their_depth(tmp_path):
    """A 16-bit grey PNG becomes k/65535 on three equal channels (Pillow alone would clip it to
    white); DSSN, whose grid is 8-bit, refuses such an off-grid point rather than rounding it."""
    from l1cert.grid import half_width
    from l1cert.noise import DSSN
    from l1cert.splitting import make_template

    _image_tree(tmp_path / "imagefolder", ("train", "test"), size=(4, 4))
    grey = np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000 + 7
    Image.fromarray(grey).save(tmp_path / "imagefolder/test/cat/0.png")  # mode I;16
    x, _ = load_split("imagefolder", "test", root=tmp_path, image_size=4)[0]
    expected = torch.from_numpy(grey / 65535.0).float()
    assert torch.equal(x, expected.expand(3, 4, 4)) and x.max() < 1
    lam = half_width(0.5, 255)
    noise = DSSN(0.5, 255, make_template((3, 4, 4), lam, 255, seed=0))
    with pytest.raises(L1CertError, match="test point idx 0 is not on the grid k/255"):
        noise.check_exact(x.unsqueeze(0), ["test point idx 0"])


def test_imagefolder_manifest_checksum_follows_the_content(tmp_path):
    _image_tree(tmp_path / "imagefolder", ("train", "test"))
    doc = prepare(tmp_path / "m.json", DataConfig(dataset="imagefolder", root=str(tmp_path)))
    assert doc["splits"]["train"]["per_class"] == {"cat": 2, "dog": 2}
    Image.new("RGB", (12, 10), "white").save(tmp_path / "imagefolder/test/dog/1.png")
    changed = prepare(tmp_path / "m.json", DataConfig(dataset="imagefolder", root=str(tmp_path)))
    assert changed["checksum"]["sha256"] != doc["checksum"]["sha256"]


def test_imagefolder_layout_errors(tmp_path):
    with pytest.raises(L1CertError, match="not found"):
        load_split("imagefolder", "train", root=tmp_path)
    _image_tree(tmp_path / "imagefolder", ("train",))
    with pytest.raises(L1CertError, match="test is missing"):
        load_split("imagefolder", "train", root=tmp_path)
    (tmp_path / "imagefolder/test/bird").mkdir(parents=True)
    with pytest.raises(L1CertError, match="differ in classes"):
        dataset_info("imagefolder", root=tmp_path)


def test_imagenet_layout_and_transforms(tmp_path, monkeypatch):
    top = tmp_path / "imagenet"
    _image_tree(top, ("train", "val"), size=(300, 260))
    monkeypatch.setenv("IMAGENET_DIR", str(top))
    val = load_split("imagenet", "test")  # test is an alias of val
    assert len(val) == 4 and val[0][0].shape == (3, 224, 224)
    train = load_split("imagenet", "train", augment=True)
    assert train[3][0].shape == (3, 224, 224) and train[3][1] == 1
    assert dataset_info("imagenet").num_classes == 2
    doc = prepare(tmp_path / "m.json", DataConfig(dataset="imagenet"))
    assert doc["splits"]["test"]["images"] == 4 and doc["checksum"]["of"] == "file list and sizes"


def test_imagenet_missing_or_malformed(tmp_path, monkeypatch):
    monkeypatch.delenv("IMAGENET_DIR", raising=False)
    with pytest.raises(L1CertError, match="--imagenet-dir"):
        load_split("imagenet", "val")
    with pytest.raises(L1CertError, match="not found"):
        load_split("imagenet", "val", imagenet_dir=tmp_path / "nowhere")
    _image_tree(tmp_path / "inet", ("train",))
    with pytest.raises(L1CertError, match="val is missing"):
        dataset_info("imagenet", imagenet_dir=tmp_path / "inet")


def test_data_cli_missing_imagenet_is_one_line(tmp_path):
    cmd = [sys.executable, "-m", "l1cert.cli", "data", "--dataset", "imagenet"]
    cmd += ["--imagenet-dir", str(tmp_path / "nowhere"), "--manifest", str(tmp_path / "m.json")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith("l1cert: error: imagenet directory")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "m.json").exists()
