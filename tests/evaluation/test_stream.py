"""The evaluation reduced case by case: the global Otsu's summed histogram is scikit-image's
Otsu of all pixels, a test split fed in batches that cut across cases gives the figures of
the split given whole, and lesions are matched within each case."""

import json
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from anodiff.errors import AnodiffError
from anodiff.evaluation import evaluate
from anodiff.evaluation.casewise import Calibration, TestStream, case_spans
from anodiff.evaluation.metrics import Overlap
from anodiff.evaluation.runner import BatchOutputs, ExamplePicker, SplitSlices, example_rows
from anodiff.evaluation.stream import CaseOutputs, SplitEvaluation
from anodiff.scoring.postprocess import PostProcess
from anodiff.scoring.thresholds import otsu_threshold


def _split(cases: int = 4, per_case: int = 7, size: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = cases * per_case
    truth = np.zeros((n, size, size), bool)
    for i in range(n):
        if i % per_case not in (0, per_case - 1) and rng.random() < 0.6:
            r, c = rng.integers(2, size - 7, 2)
            truth[i, r:r + rng.integers(2, 6), c:c + rng.integers(2, 6)] = True
    fg = np.zeros_like(truth)
    fg[:, 2:-2, 1:-1] = True
    maps = (truth * 0.5 + rng.random(truth.shape)).astype(np.float32)
    scores = maps.reshape(n, -1).max(1)
    ids = [f"case{k}" for k in range(cases) for _ in range(per_case)]
    return truth, fg, maps, scores, ids


def test_the_global_otsu_of_the_summed_case_histograms_is_scikit_images_otsu() -> None:
    truth, fg, maps, scores, ids = _split(seed=3)
    post = PostProcess(median_size=3)
    res = evaluate(maps, truth, scores, foreground=fg, case_ids=ids, postprocess=post)
    filtered = post.maps(maps, fg, ids)
    threshold = otsu_threshold(filtered, fg)  # over every brain pixel at once
    anomalous = truth.reshape(len(truth), -1).any(1)
    dice = [Overlap.of(m, t).dice for m, t in zip(((filtered > threshold) & fg)[anomalous],
                                                   truth[anomalous], strict=True)]
    assert res["dice_global_otsu"] == float(np.mean(dice))


def test_lesions_and_false_positives_are_matched_within_each_case() -> None:
    """A predicted blob on the last slice of one case and one on the first slice of the next
    touch in a stacked volume, but are two components: one per case."""
    truth = np.zeros((4, 8, 8), bool)
    truth[0, 1:3, 1:3] = True
    truth[3, 1:3, 1:3] = True
    blob = np.zeros_like(truth)
    blob[1:3, 5:7, 5:7] = True  # slices 1 (case a) and 2 (case b), the same place
    maps = (truth | blob).astype(np.float32)  # every slice's Otsu mask flags both
    by_case = evaluate(maps, truth, np.zeros(4), case_ids=["a", "a", "b", "b"])
    assert by_case["lesion_false_positives_per_image"] == 2 / 4
    assert by_case["lesion_detection_rate"] == 1.0
    stacked = evaluate(maps, truth, np.zeros(4))  # no cases: the slices are one volume
    assert stacked["lesion_false_positives_per_image"] == 1 / 4


def _stream(truth, fg, maps, scores, ids, batch: int, threshold: float) -> dict:
    items = [{"image": np.stack([fg[i] * 0.6, fg[i] * 0.4]).astype(np.float32),
              "mask": truth[i], "label": int(truth[i].any()), "case": ids[i], "index": i}
             for i in range(len(truth))]
    stream = TestStream(Calibration(threshold, 0.9, 0.01))
    stream.extend(SplitSlices.of(items))
    for start in range(0, len(truth), batch):
        rows = slice(start, start + batch)
        stream.put(start, BatchOutputs({"maps": maps[rows], "scores": scores[rows]}, 0.0,
                                       2.0 * len(scores[rows])))
    return stream.finish(resamples=50).metrics


def test_batches_cutting_across_cases_give_the_figures_of_the_whole_split() -> None:
    truth, fg, maps, scores, ids = _split(seed=1)
    whole = _stream(truth, fg, maps, scores, ids, batch=len(truth), threshold=1.1)
    for batch in (1, 3, 5, 10):  # NaN-aware: as JSON text
        assert json.dumps(_stream(truth, fg, maps, scores, ids, batch, 1.1)) == json.dumps(whole)
    inside = fg & truth.reshape(len(truth), -1).any(1)[:, None, None]
    assert whole["pixel_ap"] == pytest.approx(average_precision_score(truth[inside],
                                                                      maps[inside]))
    assert whole["n_volumes"] == 4 and whole["n_images"] == len(truth)
    assert not math.isnan(whole["pixel_ap_ci_low"])


def test_a_stream_refuses_batches_out_of_order_and_an_unfinished_split() -> None:
    truth, fg, maps, scores, ids = _split(cases=2, per_case=4)
    items = [{"image": fg[i][None].astype(np.float32), "mask": truth[i], "label": 0,
              "case": ids[i]} for i in range(len(truth))]
    stream = TestStream(Calibration(1.0, 0.9, 0.01))
    stream.extend(SplitSlices.of(items))
    with pytest.raises(AnodiffError, match="in order"):
        stream.put(4, BatchOutputs({"maps": maps[4:], "scores": scores[4:]}, 0.0, 0.0))
    stream.put(0, BatchOutputs({"maps": maps[:4], "scores": scores[:4]}, 0.0, 0.0))
    with pytest.raises(AnodiffError, match="from 4 on were not localised"):
        stream.finish()


def test_a_case_must_have_consecutive_slices() -> None:
    assert list(case_spans(["a", "a", "b"])) == [("a", 0, 2), ("b", 2, 3)]
    with pytest.raises(AnodiffError, match="case 'a' are not consecutive"):
        list(case_spans(["a", "b", "a"]))


def test_a_case_is_added_once() -> None:
    truth, fg, maps, scores, ids = _split(cases=2, per_case=3)
    split = SplitEvaluation()
    split.add(CaseOutputs("case0", maps[:3], truth[:3], scores[:3], foreground=fg[:3]))
    with pytest.raises(AnodiffError, match="'case0' was given twice"):
        split.add(CaseOutputs("case0", maps[:3], truth[:3], scores[:3], foreground=fg[:3]))
    whole = SplitEvaluation(by_case=False)
    whole.add(CaseOutputs("", maps, truth, scores, foreground=fg))
    with pytest.raises(AnodiffError, match="in one piece"):
        whole.add(CaseOutputs("", maps, truth, scores, foreground=fg))


def test_the_grid_rows_chosen_case_by_case_are_those_of_the_whole_split() -> None:
    """One slice a lesioned case (its largest lesion), the four largest first, then the
    healthy slices with the most brain of two cases; fed case by case, the same rows."""
    truth, fg, _, _, ids = _split(cases=7, per_case=5, seed=4)
    fg[[3, 4, 9]] = True  # the healthy slices with the most brain: two of case0, one of case1
    whole = example_rows(truth, fg, ids)
    picker = ExamplePicker()
    for _, begin, end in case_spans(ids):
        picker.add(begin, truth[begin:end], fg[begin:end], ids[begin:end])
    np.testing.assert_array_equal(picker.rows, whole)
    area = truth.reshape(len(truth), -1).sum(1)
    lesion_rows = whole[:4]
    assert len({ids[r] for r in lesion_rows}) == 4  # four patients
    assert list(area[lesion_rows]) == sorted(area[lesion_rows], reverse=True)
    assert area[lesion_rows[0]] == area.max()
    assert list(whole[4:]) == [3, 9]  # the first of case0's, then case1's
