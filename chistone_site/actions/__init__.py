"""The action layer: every change to what a tenant's traffic runs goes through here.

Zulip's `do_*` convention: keyword-only functions, each one transaction with its audit rows,
the data plane told after commit (tenants.events.config_changed). The REST API, the admin
(through the hook on luascripts.admin_views.ScriptPagesMixin), config sync, management
commands and, through the API, the CLI all call these, so a rule holds on every path:

- publishing validates the source once; an invalid source is refused (or kept as a draft,
  for the admin's editor), and the answer carries the route-table diff against the active
  version (scripts.do_publish_script);
- activating runs the version's stored tests against the tenant's current configuration
  first, and refuses with their results when one fails; going ahead anyway is a separate
  permission (the Django permission `luascripts.override_script_tests`, the API key scope
  `override`) and is audited as `script.override_tests` (scripts.do_activate_version);
- a rollout gives a version a share of the traffic, sticky per client; a guard rolls it back
  by itself when its error rate exceeds the previous version's (rollouts, guard);
- a shadow lets a version decide, without effects, on a sample of live requests and counts
  where it decides differently (shadows).

Reads that go with them (rollout and shadow reports) live beside the writes they describe.
"""

from chistone_site.actions.guard import Guard, check_guards, do_auto_rollback, guard_figures
from chistone_site.actions.rollouts import (
    do_end_rollout,
    do_set_rollout_percent,
    rollout_report,
    running_rollout,
)
from chistone_site.actions.scripts import (
    Activation,
    Override,
    Published,
    Validation,
    do_activate_version,
    do_deactivate_script,
    do_publish_script,
    do_rollback,
    do_test_version,
    do_validate_script,
    version_diff,
)
from chistone_site.actions.shadows import do_start_shadow, do_stop_shadow, shadow_report

__all__ = [
    "Activation", "Guard", "Override", "Published", "Validation", "check_guards",
    "do_activate_version",
    "do_auto_rollback", "do_deactivate_script", "do_end_rollout", "do_publish_script",
    "do_rollback", "do_set_rollout_percent", "do_start_shadow", "do_stop_shadow",
    "do_test_version", "do_validate_script", "guard_figures", "rollout_report",
    "running_rollout", "shadow_report", "version_diff",
]
