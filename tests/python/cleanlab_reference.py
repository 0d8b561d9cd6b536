"""cleanlab's confident learning on the cases in a JSON file: for each case (probabilities,
labels) the label-issue mask of `filter.find_label_issues` with its defaults, the issues
ranked by self-confidence and by normalised margin, the per-class thresholds and the
calibrated confident joint. Each case twice: as cleanlab runs here, and with its argsorts
(the rounding in `round_preserving_sum`, the pruning cut, the ranking) made stable, numpy's
portable order (the default argsort orders ties by a sorting network that varies with the CPU).
Written as JSON for crates/imgtype/tests/label_issues.rs to compare."""
import json
import sys
import warnings

import cleanlab.filter as cleanlab_filter
import cleanlab.internal.util as cleanlab_util
import cleanlab.rank as cleanlab_rank
import numpy as np
from cleanlab.count import compute_confident_joint, get_confident_thresholds
from cleanlab.filter import find_label_issues

warnings.simplefilter("ignore")


class StableArgsort:
    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def argsort(values, *args, **kwargs):
        return np.argsort(values, kind="stable")


def answer(labels, probabilities):
    ranked = {
        method: find_label_issues(labels, probabilities, n_jobs=1, return_indices_ranked_by=method).tolist()
        for method in ("self_confidence", "normalized_margin")
    }
    return {
        "is_issue": find_label_issues(labels, probabilities, n_jobs=1).tolist(),
        "ranked": ranked,
        "thresholds": get_confident_thresholds(labels, probabilities).tolist(),
        "confident_joint": compute_confident_joint(labels, probabilities).tolist(),
    }


cases = json.load(open(sys.argv[1]))
answers = []
for case in cases:
    probabilities = np.asarray(case["probabilities"], dtype=np.float64)
    labels = np.asarray(case["labels"], dtype=np.int64)
    for module in (cleanlab_util, cleanlab_filter, cleanlab_rank):
        module.np = np
    as_run = answer(labels, probabilities)
    for module in (cleanlab_util, cleanlab_filter, cleanlab_rank):
        module.np = StableArgsort()
    answers.append({"as_run": as_run, "stable": answer(labels, probabilities)})
json.dump(answers, open(sys.argv[2], "w"))
