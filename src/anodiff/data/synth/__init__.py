"""The embedded benchmark: synthetic brain MRI with exact lesion masks (``anodiff data synth``).

Built offline from the MNI152 2009 template that ships with nilearn; see docs/data.md.

>>> from anodiff.data.synth import SynthConfig, build, make_case
>>> manifest = build("synth", SynthConfig(size=64, seed=0))     # the whole benchmark
>>> case = make_case("stroke", 3, seed=0, size=64)               # one case, in memory

Modules, one job each: ``fields`` (smooth random fields), ``anatomy`` (template, warps),
``contrasts`` (T1/T2/FLAIR and lesion mixing), ``lesions`` (one generator per track),
``acquisition`` (bias, gamma, Rician noise), ``case`` (one case from its seed), ``stats``,
``writer`` (reproducible NIfTI), ``preview`` (PNG mosaics), ``build`` (the folder).
"""

from anodiff.data.synth.build import TRACK_NAMES, SynthConfig, build, roster, split_plan
from anodiff.data.synth.case import Case, make_case

__all__ = ["TRACK_NAMES", "Case", "SynthConfig", "build", "make_case", "roster", "split_plan"]
