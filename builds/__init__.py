"""How the built-in models were made: the training specs, build scripts and evaluation records
behind each folder of ``plugins/sfumato_models``, kept out of the installed package.

One folder per model family (``shapes/``, ``digits/``), each with a ``build.sh`` that rebuilds it
from scratch. Run the scripts from a checkout; they find the repository from their own location::

    bash builds/shapes/build.sh
    python -m builds.digits.package digits-text      # from the repository root

Training runs are written to ``runs/`` at the repository root; ``package.py`` turns them into
the shipped float16 weights and pipeline specs. See each model's ``MODEL_CARD.md``.
"""
