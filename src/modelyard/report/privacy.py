"""The report's section "Privacy": the differential-privacy budget a private run spent (metrics.json `privacy`)
and the membership-inference audit's figures when `modelyard audit privacy` has run (RUN/audit/privacy.json).
Runs with neither get no section."""

from __future__ import annotations

import html
import json

from modelyard.report.page import table


def privacy_section(run, metrics: dict) -> str:
    spent, audit = metrics.get("privacy"), _audit(run)
    if not spent and not audit:
        return ""
    parts = ["<h2>Privacy</h2>"]
    if spent:
        parts.append(
            f"<p>Trained with differential privacy (DP-SGD, Opacus): <b>epsilon {spent['epsilon']:.2f}</b> at delta "
            f"{spent['delta']:g} ({spent['accountant'].upper()} accountant), noise multiplier "
            f"{spent['noise_multiplier']:.3f}, per-example gradients clipped to {spent['max_grad_norm']:g}, Poisson "
            f"sample rate {spent['sample_rate']:.4g}"
            + (f"; target epsilon {spent['target_epsilon']:g}" if spent.get("target_epsilon") else "") + ".</p>")
        parts += [f'<p class="note">{html.escape(str(n))}</p>' for n in spent.get("notes", [])]
    if audit:
        rows = [[html.escape(str(a["attack"])), f"{a['auc']:.3f}", f"{a['tpr_at_1pct_fpr']:.3f}",
                 f"{a['members']:,}", f"{a['non_members']:,}"] for a in audit.get("attacks", [])]
        parts.append("<p>Membership-inference audit (<code>modelyard audit privacy</code>): how well an attacker tells "
                     "the training examples from held-out ones by the model's answers. ROC-AUC 0.5 is chance; the "
                     "true-positive rate at 1% false positives is what an attacker who must rarely be wrong finds.</p>")
        parts.append(table(["attack", "ROC-AUC", "TPR at 1% FPR", "members", "non-members"], rows))
    return "\n".join(parts)


def _audit(run) -> dict | None:
    """RUN/audit/privacy.json, or None when absent or unreadable (a damaged file must not fail the report)."""
    try:
        report = json.loads((run.path / "audit" / "privacy.json").read_text())
        return report if isinstance(report, dict) and isinstance(report.get("attacks"), list) else None
    except (OSError, ValueError):
        return None
