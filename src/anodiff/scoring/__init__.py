"""From anomaly maps to decisions, shared by every method and by the evaluation.

:mod:`.foreground` (the brain mask), :mod:`.smoothing`, :mod:`.residuals` (maps from an image
and its restoration), :mod:`.aggregation` (several draws into one map), :mod:`.thresholds`
(Otsu, healthy-FPR), :mod:`.rules` (the shared post-processing, mask and score rules),
:mod:`.postprocess` (evaluation-time filters and morphology), and the parts of particular
methods' own scoring: :mod:`.patches`, :mod:`.one_class`, :mod:`.memory_bank`,
:mod:`.graphcut`.
"""
