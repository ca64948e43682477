"""Membership-inference audits: what an attacker learns about a site's training slices from
the shared generators (what leaves the site) and the local discriminators (what stays).

`attacks` scores slices (threshold and difficulty-calibrated attacks), `roc` turns scores
into AUC / balanced accuracy / TPR at low FPR with bootstrap intervals, `report` writes
JSON, markdown and the ROC figure, `run` audits one site of a finished run directory.
"""
