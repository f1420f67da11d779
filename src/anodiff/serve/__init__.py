"""``anodiff serve``: a local web viewer of a run's results (issue 24; the review, Sec. 6.4).

A Starlette app (:mod:`.app`) serves one page (``static/``: plain HTML, CSS and canvas
JavaScript, no CDN, no build step) and a small JSON and binary API: the cases of ``--data``
and uploads (:mod:`.index`, :mod:`.uploads`), detection in one background worker with
results cached per case (:mod:`.worker`), and the volumes and lesion table of a case in the
viewer's orientation (:mod:`.views`). Every request needs the session's random token; case
ids are looked up in the index, never joined into paths.
"""
