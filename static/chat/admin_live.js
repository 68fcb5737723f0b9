// The admin's live-runs page (chat/opsadmin.py) reloads itself every few seconds, so ages,
// text so far and leases stay current. Not while an admin is choosing runs to stop: a
// ticked box or a chosen action would be lost by the reload. A static file: the CSP allows
// no inline script.
const RELOAD_SECONDS = 5;

function choosing() {
  const form = document.getElementById("changelist-form");
  if (!form) return false;
  if (form.querySelector("input.action-select:checked, #action-toggle:checked")) return true;
  const action = form.querySelector("select[name=action]");
  return Boolean(action && action.value);
}

setInterval(() => {
  if (!choosing() && document.visibilityState === "visible") window.location.reload();
}, RELOAD_SECONDS * 1000);
