"""The privacy step: candidates and their ledger, membership metrics, figures, evaluation.

Submodules are imported where used (``fl_mia.referee.evaluation`` pulls in the attacks).
"""
