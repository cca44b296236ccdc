"""The retry policy as a table: `decide(Failure, Position) -> Action`, and `classify` on real error bodies.

`DECISIONS` spells the policy out row by row (docs: gateway/dispatch.py);
it is the expected behaviour, written independently of `decide`, so a
change of policy has to change a row here. `classify` is fed errors built
the way the gateway builds them from Google's answers (`error_from_google`
on a `google.rpc.Status` body), plus the gateway's own error classes.
"""

from __future__ import annotations

from typing import Any

import pytest

from app.errors import GatewayError, InvalidRequest, UpstreamUnavailable
from app.gateway.dispatch import Action, Failure, Position, classify, decide
from app.translate.chat_response import BrokenToolCall
from app.upstream.errors import error_from_google

# Positions the loop can be in (Position's fields: can_wait, other_credential, last_target,
# answers_left, token_refreshable, byok). Names say what is true; anything unnamed is False,
# except `last_target`, which is True unless the name says "more targets".
FIRST_TRY_LAST = Position(can_wait=True, last_target=True)  # one target, retries left
FIRST_TRY_MORE = Position(can_wait=True, last_target=False)  # a fall-back exists, retries left
FIRST_TRY_MORE_OTHER_CRED = Position(can_wait=True, other_credential=True, last_target=False)
FIRST_TRY_LAST_OTHER_CRED = Position(can_wait=True, other_credential=True, last_target=True)
RETRIES_SPENT_LAST = Position(can_wait=False, last_target=True)  # attempts / delay bound / budget used up
RETRIES_SPENT_MORE = Position(can_wait=False, last_target=False)
RETRIES_SPENT_LAST_OTHER_CRED = Position(can_wait=False, other_credential=True, last_target=True)
RETRIES_SPENT_MORE_OTHER_CRED = Position(can_wait=False, other_credential=True, last_target=False)
ANSWERS_LEFT_LAST = Position(can_wait=True, answers_left=True, last_target=True)
ANSWERS_LEFT_MORE = Position(can_wait=False, answers_left=True, last_target=False)
NO_ANSWERS_LEFT_MORE = Position(can_wait=True, answers_left=False, last_target=False)
TOKEN_REFRESHABLE_LAST = Position(can_wait=True, token_refreshable=True, last_target=True)
TOKEN_REFRESHABLE_OTHER_CRED_MORE = Position(can_wait=True, token_refreshable=True, other_credential=True, last_target=False)
BYOK_LAST_CAN_WAIT = Position(can_wait=True, byok=True, last_target=True)
BYOK_LAST_NO_WAIT = Position(can_wait=False, byok=True, last_target=True)
BYOK_MORE = Position(can_wait=False, byok=True, last_target=False)
BYOK_MORE_CAN_WAIT = Position(can_wait=True, byok=True, last_target=False)
BYOK_REFRESHABLE_OTHER_CRED = Position(can_wait=True, byok=True, token_refreshable=True, other_credential=True, last_target=False)
BYOK_OTHER_CRED_LAST_CAN_WAIT = Position(can_wait=True, byok=True, other_credential=True, last_target=True)

C, NF, CR, RL, UN, BA = (Failure.CLIENT, Failure.NOT_FOUND, Failure.CREDENTIALS, Failure.RATE_LIMITED,
                         Failure.UNAVAILABLE, Failure.BAD_ANSWER)
GIVE_UP, RETRY, REFRESH, NEXT_CRED, NEXT_TARGET = (Action.GIVE_UP, Action.RETRY, Action.REFRESH_TOKEN,
                                                    Action.NEXT_CREDENTIAL, Action.NEXT_TARGET)

DECISIONS: list[tuple[str, Failure, Position, Action]] = [
    # -- the request's own fault: never retried, never moved elsewhere, whatever is left
    ("client/first-try-last", C, FIRST_TRY_LAST, GIVE_UP),
    ("client/first-try-more-targets", C, FIRST_TRY_MORE, GIVE_UP),
    ("client/other-credential-more-targets", C, FIRST_TRY_MORE_OTHER_CRED, GIVE_UP),
    ("client/token-refreshable", C, TOKEN_REFRESHABLE_OTHER_CRED_MORE, GIVE_UP),
    ("client/answers-left", C, ANSWERS_LEFT_LAST, GIVE_UP),
    ("client/byok", C, BYOK_LAST_CAN_WAIT, GIVE_UP),
    # -- a 200 answer a new try may fix (malformed function call): only the answer budget counts
    ("bad-answer/answers-left-last", BA, ANSWERS_LEFT_LAST, RETRY),
    ("bad-answer/answers-left-more-targets-no-wait", BA, ANSWERS_LEFT_MORE, RETRY),
    ("bad-answer/none-left-last", BA, FIRST_TRY_LAST, GIVE_UP),
    ("bad-answer/none-left-more-targets", BA, NO_ANSWERS_LEFT_MORE, GIVE_UP),
    ("bad-answer/none-left-byok", BA, BYOK_LAST_CAN_WAIT, GIVE_UP),
    # -- the model is missing on this upstream: the next target has it maybe; waiting never helps
    ("not-found/first-try-last", NF, FIRST_TRY_LAST, GIVE_UP),
    ("not-found/first-try-more-targets", NF, FIRST_TRY_MORE, NEXT_TARGET),
    ("not-found/other-credential-last", NF, FIRST_TRY_LAST_OTHER_CRED, GIVE_UP),
    ("not-found/other-credential-more-targets", NF, FIRST_TRY_MORE_OTHER_CRED, NEXT_TARGET),
    ("not-found/retries-spent-more-targets", NF, RETRIES_SPENT_MORE, NEXT_TARGET),
    ("not-found/byok-more-targets", NF, BYOK_MORE, NEXT_TARGET),
    ("not-found/byok-last", NF, BYOK_LAST_CAN_WAIT, GIVE_UP),
    # -- Google refused the credential: refresh a token once, then another credential, then the next target
    ("credentials/token-refreshable-last", CR, TOKEN_REFRESHABLE_LAST, REFRESH),
    ("credentials/token-refreshable-beats-other-credential", CR, TOKEN_REFRESHABLE_OTHER_CRED_MORE, REFRESH),
    ("credentials/other-credential-last", CR, FIRST_TRY_LAST_OTHER_CRED, NEXT_CRED),
    ("credentials/other-credential-more-targets", CR, FIRST_TRY_MORE_OTHER_CRED, NEXT_CRED),
    ("credentials/other-credential-retries-spent", CR, RETRIES_SPENT_LAST_OTHER_CRED, NEXT_CRED),
    ("credentials/no-other-more-targets", CR, FIRST_TRY_MORE, NEXT_TARGET),
    ("credentials/no-other-last-can-wait", CR, FIRST_TRY_LAST, GIVE_UP),  # waiting does not fix a key
    ("credentials/no-other-last-retries-spent", CR, RETRIES_SPENT_LAST, GIVE_UP),
    # the client's own key (bring-your-own-key): its refusal is the client's 401, nothing to rotate
    ("credentials/byok-last", CR, BYOK_LAST_CAN_WAIT, GIVE_UP),
    ("credentials/byok-more-targets", CR, BYOK_MORE_CAN_WAIT, GIVE_UP),
    ("credentials/byok-refreshable-other-credential", CR, BYOK_REFRESHABLE_OTHER_CRED, GIVE_UP),
    # -- 429: another quota group now, else a fall-back now, else wait if the budget allows
    ("rate-limited/other-credential-last", RL, FIRST_TRY_LAST_OTHER_CRED, NEXT_CRED),
    ("rate-limited/other-credential-more-targets", RL, FIRST_TRY_MORE_OTHER_CRED, NEXT_CRED),
    ("rate-limited/other-credential-retries-spent", RL, RETRIES_SPENT_LAST_OTHER_CRED, NEXT_CRED),
    ("rate-limited/other-credential-more-retries-spent", RL, RETRIES_SPENT_MORE_OTHER_CRED, NEXT_CRED),
    ("rate-limited/more-targets-can-wait", RL, FIRST_TRY_MORE, NEXT_TARGET),  # fall-back before waiting
    ("rate-limited/more-targets-retries-spent", RL, RETRIES_SPENT_MORE, NEXT_TARGET),
    ("rate-limited/last-can-wait", RL, FIRST_TRY_LAST, RETRY),
    ("rate-limited/last-retries-spent", RL, RETRIES_SPENT_LAST, GIVE_UP),
    ("rate-limited/byok-last-can-wait", RL, BYOK_LAST_CAN_WAIT, RETRY),
    ("rate-limited/byok-other-credential-ignored", RL, BYOK_OTHER_CRED_LAST_CAN_WAIT, RETRY),
    ("rate-limited/byok-last-no-wait", RL, BYOK_LAST_NO_WAIT, GIVE_UP),
    ("rate-limited/byok-more-targets", RL, BYOK_MORE, NEXT_TARGET),
    # -- 5xx / connection failure: the same target again first (a blip), then the fall-back
    ("unavailable/first-try-last", UN, FIRST_TRY_LAST, RETRY),
    ("unavailable/first-try-more-targets", UN, FIRST_TRY_MORE, RETRY),
    ("unavailable/other-credential-more-targets", UN, FIRST_TRY_MORE_OTHER_CRED, RETRY),
    ("unavailable/retries-spent-more-targets", UN, RETRIES_SPENT_MORE, NEXT_TARGET),
    ("unavailable/retries-spent-other-credential-more", UN, RETRIES_SPENT_MORE_OTHER_CRED, NEXT_TARGET),
    ("unavailable/retries-spent-last", UN, RETRIES_SPENT_LAST, GIVE_UP),
    ("unavailable/retries-spent-last-other-credential", UN, RETRIES_SPENT_LAST_OTHER_CRED, GIVE_UP),
    ("unavailable/byok-can-wait", UN, BYOK_LAST_CAN_WAIT, RETRY),
    ("unavailable/byok-more-targets", UN, BYOK_MORE, NEXT_TARGET),
    ("unavailable/byok-last-no-wait", UN, BYOK_LAST_NO_WAIT, GIVE_UP),
]


@pytest.mark.parametrize(("failure", "position", "expected"), [row[1:] for row in DECISIONS], ids=[row[0] for row in DECISIONS])
def test_decide(failure: Failure, position: Position, expected: Action) -> None:
    assert decide(failure, position) is expected


def test_the_table_covers_every_failure_and_every_action() -> None:
    assert {row[1] for row in DECISIONS} == set(Failure)
    assert {row[3] for row in DECISIONS} == set(Action)
    assert len({row[0] for row in DECISIONS}) == len(DECISIONS)


def test_byok_never_rotates_or_refreshes_whatever_the_position() -> None:
    """Exhaustively: with the client's own key no failure leads to another credential or a token refresh."""
    for failure in Failure:
        for bits in range(32):
            flags = [bool(bits >> i & 1) for i in range(5)]
            at = Position(*flags, byok=True)
            assert decide(failure, at) not in (Action.NEXT_CREDENTIAL, Action.REFRESH_TOKEN), (failure, at)


def test_client_errors_are_given_up_in_every_position() -> None:
    for bits in range(64):
        at = Position(*[bool(bits >> i & 1) for i in range(6)])
        assert decide(Failure.CLIENT, at) is Action.GIVE_UP, at


# -- classify ------------------------------------------------------------------------------------------------

STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
          429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def google(code: int, message: str = "", reason: str | None = None, retry_delay: str | None = None,
           quota_id: str | None = None) -> GatewayError:
    """The error the gateway builds from Google's HTTP answer with this `google.rpc.Status` body."""
    details: list[dict[str, Any]] = []
    if reason is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "googleapis.com"})
    if retry_delay is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay})
    if quota_id is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaId": quota_id}]})
    body = {"error": {"code": code, "message": message or f"Google said {code}.", "status": STATUS.get(code, "UNKNOWN"),
                      "details": details}}
    return error_from_google(code, body)


CLASSIFY: list[tuple[str, Any, Failure]] = [
    ("400", lambda: google(400, "Invalid JSON payload received. Unknown name \"foo\""), Failure.CLIENT),
    ("400-api-key-invalid", lambda: google(400, "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID"),
     Failure.CREDENTIALS),
    ("401", lambda: google(401, "Request had invalid authentication credentials."), Failure.CREDENTIALS),
    ("401-access-token-expired", lambda: google(401, "Request had invalid authentication credentials.",
                                                reason="ACCESS_TOKEN_EXPIRED"), Failure.CREDENTIALS),
    ("403-permission-denied-no-reason", lambda: google(403, "The caller does not have permission"), Failure.CLIENT),
    ("403-permission-denied-resource", lambda: google(
        403, "You do not have permission to access the CachedContent abc123 (or it may not exist).",
        reason="IAM_PERMISSION_DENIED"), Failure.CLIENT),
    ("403-api-key-service-blocked", lambda: google(
        403, "Requests to this API generativelanguage.googleapis.com method "
             "google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent are blocked.",
        reason="API_KEY_SERVICE_BLOCKED"), Failure.CREDENTIALS),
    ("403-service-disabled", lambda: google(403, "Generative Language API has not been used in project 1 before.",
                                            reason="SERVICE_DISABLED"), Failure.CREDENTIALS),
    ("404", lambda: google(404, "models/nope is not found for API version v1beta, or is not supported for "
                                "generateContent."), Failure.NOT_FOUND),
    ("429", lambda: google(429, "Resource has been exhausted (e.g. check quota).", retry_delay="7s"), Failure.RATE_LIMITED),
    ("429-daily", lambda: google(429, "You exceeded your current quota.",
                                 quota_id="GenerateRequestsPerDayPerProjectPerModel-FreeTier"), Failure.RATE_LIMITED),
    ("500", lambda: google(500, "An internal error has occurred."), Failure.UNAVAILABLE),
    ("502", lambda: google(502, "Bad gateway."), Failure.UNAVAILABLE),
    ("503", lambda: google(503, "The model is overloaded. Please try again later."), Failure.UNAVAILABLE),
    ("504", lambda: google(504, "Deadline expired before operation could complete."), Failure.UNAVAILABLE),
    ("upstream-unavailable-connect", lambda: UpstreamUnavailable("Could not connect to the upstream."), Failure.UNAVAILABLE),
    ("upstream-unavailable-timeout", lambda: UpstreamUnavailable("The upstream did not answer in time.", status=504),
     Failure.UNAVAILABLE),
    ("broken-tool-call", lambda: BrokenToolCall("MALFORMED_FUNCTION_CALL", "bad args"), Failure.BAD_ANSWER),
    ("gateway-invalid-request", lambda: InvalidRequest("messages: field required"), Failure.CLIENT),
]


@pytest.mark.parametrize(("make", "expected"), [row[1:] for row in CLASSIFY], ids=[row[0] for row in CLASSIFY])
def test_classify(make: Any, expected: Failure) -> None:
    assert classify(make()) is expected


def test_classified_errors_keep_what_the_client_needs() -> None:
    """The errors above are the real ones: statuses the SDKs map, Retry-After from RetryInfo."""
    limited = google(429, "quota", retry_delay="7s")
    assert (limited.status, limited.headers.get("retry-after")) == (429, "7")
    assert google(403, "no permission").status == 403
    assert google(400, "bad", reason="API_KEY_INVALID").status == 400  # shown as a 502 only after dispatch
    assert google(503, "overloaded").status == 503
