"""The official Azure AI Personalizer Python client (azure-ai-personalizer==1.0.0b1) against a
running Tailor server. Run by tests/e2e/personalizer.rs with PERSONALIZER_ENDPOINT (the server's
base URL; the client appends /personalizer) and PERSONALIZER_KEY (an editor key scoped to one
campaign). Exits non-zero on the first failed check."""

import io
import os
import sys

from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.ai.personalizer import PersonalizerAdministrationClient, PersonalizerClient

endpoint = os.environ["PERSONALIZER_ENDPOINT"]
key = AzureKeyCredential(os.environ["PERSONALIZER_KEY"])
client = PersonalizerClient(endpoint, key)
admin = PersonalizerAdministrationClient(endpoint, key)
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1
    print(f"ok: {what}")


ACTIONS = [
    {"id": "pasta", "features": [{"cuisine": "italian", "price": 12}]},
    {"id": "curry", "features": [{"cuisine": "indian", "price": 10}, {"spicy": True}]},
    {"id": "salad", "features": [{"cuisine": "any", "price": 8}]},
    {"id": "sushi", "features": [{"cuisine": "japanese", "price": 20}]},
]
CONTEXT = [{"time": "noon"}, {"user": {"diet": "none", "visits": 3}}]

# Single slot: rank, reward.
r = client.rank(
    {"contextFeatures": CONTEXT, "actions": ACTIONS, "excludedActions": ["sushi"], "eventId": "py-1"}
)
check(r["eventId"] == "py-1", "rank returns the event id")
check(r["rewardActionId"] in {"pasta", "curry", "salad"}, "rank serves a non-excluded action")
check(r["ranking"][0]["id"] == r["rewardActionId"], "the served action leads the ranking")
check(abs(sum(a["probability"] for a in r["ranking"]) - 1.0) < 1e-9, "probabilities sum to 1")
check(r["ranking"][-1] == {"id": "sushi", "probability": 0.0}, "excluded actions come last at 0")
client.reward("py-1", {"value": 1.0})
check(True, "reward accepted")

# Deferred activation.
r = client.rank({"contextFeatures": CONTEXT, "actions": ACTIONS, "deferActivation": True})
client.activate(r["eventId"])
client.reward(r["eventId"], {"value": 0.5})
check(True, "activate then reward accepted")

try:
    client.reward("no-such-event", {"value": 1.0})
    check(False, "reward of an unknown event fails")
except ResourceNotFoundError as e:
    check(e.status_code == 404, "reward of an unknown event is a 404 ResourceNotFoundError")

# Multi-slot.
m = client.rank_multi_slot(
    {
        "contextFeatures": CONTEXT,
        "actions": ACTIONS,
        "slots": [
            {"id": "hero", "baselineAction": "pasta", "features": [{"size": "large"}]},
            {"id": "side", "baselineAction": "salad", "excludedActions": ["sushi"]},
        ],
        "eventId": "py-multi",
        "deferActivation": True,
    }
)
check(m["eventId"] == "py-multi", "multi-slot rank returns the event id")
served = [s["rewardActionId"] for s in m["slots"]]
check([s["id"] for s in m["slots"]] == ["hero", "side"], "one answer per slot, in order")
check(len(set(served)) == 2 and served[1] != "sushi", "distinct actions, exclusions honoured")
client.activate_multi_slot("py-multi")
client.reward_multi_slot("py-multi", {"reward": [{"slotId": "hero", "value": 1.0}]})
check(True, "multi-slot activate and reward accepted")

# Service configuration round trip.
svc = admin.get_service_configuration()
check("rewardWaitTime" in svc and "learningMode" in svc, "service configuration readable")
svc.update(
    {
        "rewardWaitTime": "PT5M",
        "defaultReward": 0.1,
        "rewardAggregation": "earliest",
        "explorationPercentage": 0.05,
        "logRetentionDays": 30,
        "modelExportFrequency": "PT3M",
        "modelRetrainDays": 7,
        "learningMode": "Online",
        "isAutoOptimizationEnabled": False,
    }
)
svc.pop("latestApprenticeModeMetrics", None)
out = admin.update_service_configuration(svc)
back = admin.get_service_configuration()
for field in [
    "rewardWaitTime",
    "defaultReward",
    "rewardAggregation",
    "explorationPercentage",
    "logRetentionDays",
    "modelExportFrequency",
    "modelRetrainDays",
    "learningMode",
]:
    check(back[field] == svc[field] == out[field], f"service configuration round trip: {field}")
try:
    admin.update_service_configuration(dict(svc, rewardWaitTime="ten minutes"))
    check(False, "a bad duration is refused")
except HttpResponseError as e:
    check(e.status_code == 400 and e.error.code == "BadRequest", "a bad duration is a 400 BadRequest")

# Policy configuration round trip.
p = admin.update_policy({"name": "tuned", "arguments": "--cb_explore_adf --epsilon 0.1 -q ::"})
check(p == {"name": "tuned", "arguments": "--cb_explore_adf --epsilon 0.1 -q ::"}, "policy update answers the policy")
check(admin.get_policy() == p, "policy round trip")
try:
    admin.update_policy({"name": "bagging", "arguments": "--cb_explore_adf --bag 5"})
    check(False, "an unsupported exploration algorithm is refused")
except HttpResponseError as e:
    check(e.status_code == 400 and "--bag" in e.error.message, "--bag is refused with a clear message")
reset = admin.reset_policy()
check("--epsilon 0.2" in reset["arguments"], "reset policy restores the default arguments")

# Learn a little, then export, reset and import the model.
for i in range(40):
    r = client.rank({"contextFeatures": CONTEXT, "actions": ACTIONS, "eventId": f"train-{i}"})
    client.reward(r["eventId"], {"value": 1.0 if r["rewardActionId"] == "curry" else 0.0})
model = b"".join(admin.export_model())
check(len(model) > 16, f"model exported ({len(model)} bytes)")
admin.reset_model()
check(b"".join(admin.export_model()) != model, "reset changes the model")
admin.import_model(io.BytesIO(model))
check(b"".join(admin.export_model()) == model, "import restores the exported model")
props = admin.get_model_properties()
check("creationTime" in props and "lastModifiedTime" in props, "model properties")
try:
    admin.import_model(io.BytesIO(b"not a model"))
    check(False, "a foreign model file is refused")
except HttpResponseError as e:
    check(e.status_code == 400, "a foreign model file is a 400")

# Evaluations over the log, and the logs.
import datetime

now = datetime.datetime.now(datetime.timezone.utc)
start = now - datetime.timedelta(hours=1)
admin.create_evaluation(
    "eval-1",
    {
        "name": "try more exploration",
        "startTime": start.isoformat(),
        "endTime": (now + datetime.timedelta(hours=1)).isoformat(),
        "policies": [{"name": "eps-0.3", "arguments": "--cb_explore_adf --epsilon 0.3 -q ::"}],
    },
)
ev = admin.get_evaluation("eval-1", start_time=start, end_time=now)
check(ev["id"] == "eval-1" and ev["status"] == "Succeeded", "evaluation created and readable")
names = [v["name"] for v in ev["content"]["value"]]
check("eps-0.3" in names, f"the requested policy is evaluated ({names})")
listed = list(admin.list_evaluations())
check([e["id"] for e in listed] == ["eval-1"], "evaluations listed")
admin.delete_evaluation("eval-1")
check(list(admin.list_evaluations()) == [], "evaluation deleted")
logs = admin.get_log_properties()
check("from" in logs["dateRange"], "log properties give the date range")
admin.delete_logs()
check(admin.get_log_properties()["dateRange"] == {}, "logs deleted")
try:
    list(admin.list_feature_importances())
    check(False, "feature importances are not implemented")
except HttpResponseError as e:
    check(e.status_code == 501, "feature importances: 501 in Personalizer's shape")

# Issue 17: Personalizer's limits and field names, as its client reports them.
try:
    client.rank({"actions": [{"id": f"a{i}", "features": [{"i": i}]} for i in range(51)]})
    check(False, "51 actions are refused")
except HttpResponseError as e:
    check(
        e.status_code == 400 and e.error.code == "BadRequest" and e.error.target == "actions",
        f"51 actions: 400 BadRequest naming actions ({e.error.target})",
    )
try:
    client.rank({"actions": ACTIONS, "eventId": "e" * 257})
    check(False, "a 257-character eventId is refused")
except HttpResponseError as e:
    check(e.status_code == 400 and e.error.target == "eventId", f"long eventId names eventId ({e.error.target})")
try:
    client.rank({"actions": ACTIONS + [dict(ACTIONS[0])], "excludedActions": ["curry"]})
    check(False, "a duplicate action id is refused")
except HttpResponseError as e:
    check(e.error.target == "actions[4].id", f"the duplicate is named as sent ({e.error.target})")
deep = [{"user": {"profile": {"history": {"last": {"category": "shoes"}}}}}]
r = client.rank({"contextFeatures": deep, "actions": ACTIONS})
check(r["rewardActionId"] in {a["id"] for a in ACTIONS}, "a context nested 5 levels deep ranks")
try:
    admin.create_evaluation(
        "backwards",
        {"name": "backwards", "startTime": now.isoformat(), "endTime": start.isoformat(), "policies": []},
    )
    check(False, "an evaluation ending before it starts is refused")
except HttpResponseError as e:
    check(e.status_code == 400 and e.error.target == "endTime", f"endTime before startTime names endTime ({e.error.target})")
p = admin.update_policy({"name": "quiet", "arguments": "--cb_explore_adf --quiet --epsilon 0.2 -q ::"})
check(p["arguments"].startswith("--cb_explore_adf --quiet"), "--quiet is accepted")

print(f"{checks} checks passed")
