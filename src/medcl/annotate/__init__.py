"""``medcl annotate``: a local web app to scribble, train, review predictions and scribble again.

The top wing beside :mod:`medcl.cli` (it may import every lower wing; only the CLI imports it):

* :mod:`~medcl.annotate.drawing` -- scribble maps <-> the page's drawing values, upload decoding;
* :mod:`~medcl.annotate.cases` -- case lookup, scribble status, atomic versioned saves, locks;
* :mod:`~medcl.annotate.uncertainty` -- per-slice entropy of a run's probabilities;
* :mod:`~medcl.annotate.review` -- a run's predictions and uncertainty for every case;
* :mod:`~medcl.annotate.jobs` -- a background ``medcl train`` process and its progress;
* :mod:`~medcl.annotate.server` -- the HTTP API and the page (needs
  ``pip install medcl[annotate]``).
"""
