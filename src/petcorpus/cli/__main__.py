"""``python -m petcorpus.cli``: the same as the ``petcorpus`` console script."""

from petcorpus.cli import main

main()
