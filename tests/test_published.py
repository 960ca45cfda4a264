import pickle
import re

import numpy as np
import pytest

from l1cert.published import read_published
from l1cert.utils import L1CertError


def _write(directory, **arrays):
    directory.mkdir(exist_ok=True)
    for name, array in arrays.items():
        np.save(directory / f"{name}.npy", array)
    return directory


def test_reads_predicted_labels_with_abstentions(tmp_path):
    d = _write(
        tmp_path / "dssn",
        labels=np.array([3, 1, 0, 2]),
        predicted_labels=np.array([3, 2, -1, 2]),
        radius_l1=np.array([0.5, 0.25, 0.0, 1.0]),
    )
    r = read_published(d)
    assert r.path == d and len(r) == 4
    assert r.labels.tolist() == [3, 1, 0, 2] and r.predict.tolist() == [3, 2, -1, 2]
    assert r.radius.tolist() == [0.5, 0.25, 0.0, 1.0] and r.radius.dtype == np.float64
    assert r.correct.tolist() == [True, False, False, True]
    with pytest.raises(ValueError):
        r.radius[0] = 9.0  # read-only


def test_reads_rs4a_scores_float_labels_and_negative_radii(tmp_path):
    # rs4a: labels saved from np.zeros (floats), preds = class probabilities, radius unclipped
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    d = _write(
        tmp_path,
        labels=np.array([1.0, 1.0, 2.0]),
        preds=scores,
        radius_l1=np.array([0.8, -0.1, 0.0], dtype=np.float32),
    )
    r = read_published(d)
    assert r.labels.dtype == np.int64 and r.labels.tolist() == [1, 1, 2]
    assert r.predict.tolist() == [1, 0, 2] and r.correct.tolist() == [True, False, True]
    assert r.radius[1] == pytest.approx(-0.1)  # certified at no r >= 0; kept as written


BASE = {
    "labels": np.array([0, 1, 2]),
    "predicted_labels": np.array([0, 1, 1]),
    "radius_l1": np.array([0.1, 0.2, 0.3]),
}


@pytest.mark.parametrize(
    "change, file, message",
    [
        ({"labels": None}, "labels.npy", "missing"),
        ({"radius_l1": None}, "radius_l1.npy", "missing"),
        ({"predicted_labels": None}, "predicted_labels.npy", "neither"),
        ({"preds": np.eye(3)}, "preds.npy", "both"),
        ({"radius_l1": np.array([0.1, 0.2])}, "radius_l1.npy", "2 entries"),
        ({"predicted_labels": np.array([0, 1, 1, 1])}, "predicted_labels.npy", "4 entries"),
        ({"radius_l1": np.array([0.1, np.nan, 0.3])}, "radius_l1.npy", "finite"),
        ({"radius_l1": np.array([0.1, np.inf, 0.3])}, "radius_l1.npy", "finite"),
        ({"labels": np.array([0.0, 1.5, 2.0])}, "labels.npy", "integers"),
        ({"labels": np.array([0, -1, 2])}, "labels.npy", "below 0"),
        ({"labels": np.array([], dtype=int)}, "labels.npy", "no entries"),
        ({"labels": np.zeros((3, 1), dtype=int)}, "labels.npy", "1-D"),
        ({"predicted_labels": np.array([0, -2, 1])}, "predicted_labels.npy", "below -1"),
        ({"predicted_labels": np.array(["a", "b", "c"])}, "predicted_labels.npy", "integers"),
    ],
)
def test_every_bad_directory_is_refused_naming_the_file(tmp_path, change, file, message):
    arrays = {**BASE, **change}
    _write(tmp_path, **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(L1CertError, match=message) as err:
        read_published(tmp_path)
    assert file in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "scores, message", [(np.array([0.2, 0.8, 0.5]), "scores"), (np.full((3, 2), np.nan), "finite")]
)
def test_scores_must_be_a_finite_matrix(tmp_path, scores, message):
    _write(tmp_path, labels=BASE["labels"], radius_l1=BASE["radius_l1"], preds=scores)
    with pytest.raises(L1CertError, match=f"preds.npy.*{message}"):
        read_published(tmp_path)


@pytest.mark.parametrize(
    "change, file, message",
    [
        ({"labels": np.array([0, 10, 2])}, "labels.npy", "a class of 10 or more (10)"),
        ({"labels": np.array([0.0, 12.0, 2.0])}, "labels.npy", "a class of 10 or more (12.0)"),
        ({"predicted_labels": np.array([0, 1, 10])}, "predicted_labels.npy", "a class of 10 or"),
        ({"predicted_labels": None, "preds": np.eye(3)}, "preds.npy", "expected scores"),
    ],
)
def test_classes_lie_below_the_class_count_where_it_is_known(tmp_path, change, file, message):
    arrays = {**BASE, **change}
    _write(tmp_path, **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(L1CertError, match=re.escape(message)) as err:
        read_published(tmp_path, num_classes=10)
    assert file in str(err.value) and "\n" not in str(err.value)
    read_published(tmp_path)  # the classes themselves are fine where no count is known


def test_the_class_count_is_met_exactly(tmp_path):
    _write(tmp_path, labels=np.array([0, 9]), preds=np.eye(10)[[0, 9]], radius_l1=np.ones(2))
    assert read_published(tmp_path, num_classes=10).predict.tolist() == [0, 9]


def test_pickles_and_non_npy_files_are_refused(tmp_path):
    _write(tmp_path, **BASE)
    np.save(tmp_path / "labels.npy", np.array([0, 1, {"x": 2}], dtype=object), allow_pickle=True)
    with pytest.raises(L1CertError, match="labels.npy: not a plain numpy array"):
        read_published(tmp_path)
    for content in [pickle.dumps([0, 1, 2]), b"", b"\x93NUMPY\x20\x67 not a header\n"]:
        (tmp_path / "labels.npy").write_bytes(content)
        with pytest.raises(L1CertError, match="labels.npy") as err:
            read_published(tmp_path)
        assert "\n" not in str(err.value)
    with open(tmp_path / "labels.npy", "wb") as f:
        np.savez(f, labels=BASE["labels"])
    with pytest.raises(L1CertError, match="labels.npy: an .npz archive"):
        read_published(tmp_path)


def test_an_empty_or_missing_directory_is_refused(tmp_path):
    with pytest.raises(L1CertError, match="labels.npy is missing"):
        read_published(tmp_path)
    with pytest.raises(L1CertError, match="not a directory"):
        read_published(tmp_path / "nowhere")
