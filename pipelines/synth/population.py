"""The synthetic world: product catalog, tenants and users with sticky attributes, sessions.

Pure and deterministic: everything is drawn from the `random.Random` passed in.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pipelines.privacy.pseudonym import pseudonymize

FeatureKind = Literal["plain", "rag", "agent"]


@dataclass(frozen=True)
class Surface:
    """A product surface: its model, live versions (traffic weights), features, locales."""

    name: str
    model_id: str
    versions: tuple[tuple[str, float], ...]
    features: tuple[tuple[str, float], ...]
    prompt_version: str
    latency_factor: float
    locales: tuple[str, ...] | None = None  # None: available in every locale


FEATURE_KINDS: dict[str, FeatureKind] = {
    "assistant": "plain",
    "code_assist": "plain",
    "doc_qa": "rag",
    "completions": "plain",
    "rag_answer": "rag",
    "search_answer": "rag",
    "query_suggest": "plain",
    "agent_tools": "agent",
    "browse_agent": "agent",
}

# Two versions live on chat (a canary) and api (a pinned older snapshot), so that
# (product_surface, model_version, locale) has 2*7 + 2*7 + 7 + 4 = 39 combinations.
SURFACES: dict[str, Surface] = {
    s.name: s
    for s in (
        Surface(
            "chat",
            "atlas-l",
            (("atlas-l-2026.10.2", 0.8), ("atlas-l-2026.11.0", 0.2)),
            (("assistant", 0.7), ("code_assist", 0.2), ("doc_qa", 0.1)),
            "sp-chat-14",
            1.0,
        ),
        Surface(
            "api",
            "atlas-l",
            (("atlas-l-2026.10.2", 0.7), ("atlas-l-2026.09.5", 0.3)),
            (("completions", 0.75), ("rag_answer", 0.25)),
            "sp-api-6",
            0.9,
        ),
        Surface(
            "search",
            "atlas-s",
            (("atlas-s-2026.08.1", 1.0),),
            (("search_answer", 0.8), ("query_suggest", 0.2)),
            "sp-search-9",
            0.7,
        ),
        Surface(
            "agent",
            "atlas-agent",
            (("atlas-agent-2026.10.0", 1.0),),
            (("agent_tools", 0.7), ("browse_agent", 0.3)),
            "sp-agent-3",
            2.0,
            ("en-US", "en-GB", "de-DE", "ja-JP"),
        ),
    )
}

LOCALES: tuple[tuple[str, float], ...] = (
    ("en-US", 0.38),
    ("en-GB", 0.10),
    ("de-DE", 0.12),
    ("fr-FR", 0.10),
    ("ja-JP", 0.10),
    ("es-ES", 0.08),
    ("pt-BR", 0.12),
)
REGIONS: dict[str, tuple[tuple[str, float], ...]] = {
    "en-US": (("us-east", 0.6), ("us-west", 0.4)),
    "en-GB": (("eu-west", 1.0),),
    "de-DE": (("eu-central", 0.8), ("eu-west", 0.2)),
    "fr-FR": (("eu-west", 1.0),),
    "ja-JP": (("ap-northeast", 1.0),),
    "es-ES": (("eu-west", 1.0),),
    "pt-BR": (("sa-east", 0.7), ("us-east", 0.3)),
}
CLIENTS = (("web", 0.45), ("ios", 0.20), ("android", 0.15), ("sdk", 0.20))
COHORTS = (("free", 0.5), ("pro", 0.3), ("enterprise", 0.2))
# Surfaces reached from each client: SDK traffic is mostly the API, apps are mostly chat.
CLIENT_SURFACES: dict[str, tuple[tuple[str, float], ...]] = {
    "sdk": (("api", 0.85), ("agent", 0.15)),
    "web": (("chat", 0.55), ("search", 0.30), ("agent", 0.15)),
    "ios": (("chat", 0.65), ("search", 0.25), ("agent", 0.10)),
    "android": (("chat", 0.65), ("search", 0.25), ("agent", 0.10)),
}
TIER_COUNTS = (("internal", 2), ("beta", 4), ("ga", 29), ("regulated", 5))
POLICY_VERSION = "policy-2026.11"
STRICT_POLICY_VERSION = "policy-2026.11-strict"


class Weighted:
    """A categorical distribution over (value, weight) pairs, drawn by bisection (fast)."""

    __slots__ = ("_cum", "_values")

    def __init__(self, options: Sequence[tuple[str, float]]) -> None:
        self._values = [v for v, _ in options]
        self._cum = list(itertools.accumulate(w for _, w in options))

    def draw(self, rng: random.Random) -> str:
        """One value, drawn with the weights."""
        i = bisect.bisect_right(self._cum, rng.random() * self._cum[-1])
        return self._values[min(i, len(self._values) - 1)]


def pick(rng: random.Random, options: Sequence[tuple[str, float]]) -> str:
    """One value of `options` ((value, weight) pairs) drawn with the weights."""
    return Weighted(options).draw(rng)


def _serves(surface: str, locale: str) -> bool:
    locales = SURFACES[surface].locales
    return locales is None or locale in locales


@functools.cache
def _surface_choice(client: str, locale: str) -> Weighted:
    return Weighted([(s, w) for s, w in CLIENT_SURFACES[client] if _serves(s, locale)])


_FEATURES = {name: Weighted(s.features) for name, s in SURFACES.items()}


@dataclass(frozen=True)
class User:
    """An end user; every attribute is sticky for the whole generated stream."""

    pseudonym: str
    tenant: str
    risk_tier: str
    locale: str
    region: str
    client: str
    cohort: str


@dataclass
class Session:
    """An open session: who, where, and how many events it still has to emit."""

    pseudonym: str
    user: User
    surface: Surface
    feature: str
    kind: FeatureKind
    segment: dict[str, str]  # template; model_version is filled per event
    remaining: int


class Population:
    """Tenants and users with sticky attributes, drawn once from `rng`.

    Tenants get a risk tier (fixed counts, so every tier exists) and a Zipf-like size; users
    get a tenant, locale, region, client and cohort, and a lognormal activity weight, since a
    few heavy users produce much of the traffic.
    """

    def __init__(
        self, rng: random.Random, key: bytes, *, n_tenants: int = 40, n_users: int = 3000
    ) -> None:
        tiers = [t for t, n in TIER_COUNTS for _ in range(n)]
        tiers += ["ga"] * max(0, n_tenants - len(tiers))
        tiers = tiers[:n_tenants]
        rng.shuffle(tiers)
        tenants = [pseudonymize(f"tenant-{i:03d}", key) for i in range(n_tenants)]
        sizes = [1.0 / (rank + 1) ** 0.9 for rank in range(n_tenants)]
        rng.shuffle(sizes)
        self.users: list[User] = []
        for j in range(n_users):
            t = rng.choices(range(n_tenants), sizes)[0]
            locale = pick(rng, LOCALES)
            self.users.append(
                User(
                    pseudonym=pseudonymize(f"user-{j:05d}", key),
                    tenant=tenants[t],
                    risk_tier=tiers[t],
                    locale=locale,
                    region=pick(rng, REGIONS[locale]),
                    client=pick(rng, CLIENTS),
                    cohort=pick(rng, COHORTS),
                )
            )
        activity = [rng.lognormvariate(0.0, 1.0) for _ in range(n_users)]
        self._cum_activity = list(itertools.accumulate(activity))

    def new_session(self, rng: random.Random, pseudonym: str, mean_length: float) -> Session:
        """A session of a user drawn by activity, on a surface their client and locale reach."""
        x = rng.random() * self._cum_activity[-1]
        user = self.users[min(bisect.bisect_right(self._cum_activity, x), len(self.users) - 1)]
        surface = SURFACES[_surface_choice(user.client, user.locale).draw(rng)]
        feature = _FEATURES[surface.name].draw(rng)
        # Geometric length >= 1 with the requested mean: conversations are mostly short.
        length = 1
        p_more = 1.0 - 1.0 / mean_length
        while rng.random() < p_more:
            length += 1
        segment = {
            "product_surface": surface.name,
            "feature": feature,
            "model_id": surface.model_id,
            "model_version": "",
            "prompt_version": surface.prompt_version,
            "policy_version": STRICT_POLICY_VERSION
            if user.risk_tier == "regulated"
            else POLICY_VERSION,
            "locale": user.locale,
            "region": user.region,
            "risk_tier": user.risk_tier,
            "client": user.client,
            "user_cohort": user.cohort,
        }
        return Session(pseudonym, user, surface, feature, FEATURE_KINDS[feature], segment, length)
