"""Composition experiments (``diffuser compose ...``): each writes one key of results/compose.json and
figures into assets/."""
