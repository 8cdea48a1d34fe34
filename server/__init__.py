"""The Flower ServerApp: builds strategy, evaluation and workflow from the experiment config."""
