"""One decoding step, written once for every pair (docs/algorithm.md, Word boundaries).

For every row: the model that wrote the previous token proposes the next one; if it continues
the current word it is taken. Otherwise the row is at a word boundary: its request's router
picks the model for the next word, and a model that takes over draws a token that starts a new
word (it may not continue the other model's word).

Rows are grouped by request: each request's sampler, router and random numbers apply to its
own rows, while each runner is asked at most once per phase for all rows together (see
:class:`Step`). The draws do not depend on which models ran, so lazy and lock-step decoding
give the same tokens.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from ..routers import RouterInputs, checked_choice
from ..runners import RowsFailed
from .bridge import Bridge, Fetched
from .guard import cross_family_guard
from .pair import ALIGNED, BASE, NO_SOURCE, Pair
from .randomness import RowRandomness
from .request import Request
from .samples import SampleRecord


class RequestFailed(Exception):
    """A step failed because of one request (its router raised); the others can go on."""

    def __init__(self, request: Request, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.request, self.error = request, error


@dataclass(frozen=True)
class Group:
    """The rows ``start:stop`` of the batch that belong to ``request``."""

    request: Request
    start: int
    stop: int

    @property
    def slice(self) -> slice:
        return slice(self.start, self.stop)

    def rows(self, flags: Sequence[bool]) -> list[int]:
        """Batch indices of this group's rows whose flag is set."""
        return [r for r in range(self.start, self.stop) if flags[r]]


class StepScores:
    """The distributions a step has fetched, per source, and each group's tempered and
    truncated scores, computed when first read and again only after a fetch for more rows.
    A constrained request's grammar masks its logits first, so routers and draws read the
    same masked distributions."""

    def __init__(
        self,
        bridge: Bridge,
        rows: Sequence[SampleRecord],
        writers: list[int],
        groups: Sequence[Group],
    ) -> None:
        self.bridge = bridge
        self.rows = rows
        self.writers = writers
        self.groups = groups
        self.logits: dict[int, torch.Tensor] = {}
        #: Per source, the token its engine drew for each row (-1: none; runners that sample).
        self.proposals: dict[int, list[int]] = {}
        #: Per source whose runner lists only its top-k: each row's mass outside them.
        self.rest_mass: dict[int, torch.Tensor] = {}
        self.ready: tuple[set[int], set[int]] = (set(), set())
        self._cache: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def fetch(self, needs: dict[int, list[int]]) -> None:
        """Ask each runner once for the rows that need its distribution and do not have it
        yet. This is the only place a step waits on a model. Two remote models are asked at
        the same time (their requests overlap); in-process ones one after the other."""
        asks = {
            source: missing
            for source, rows in needs.items()
            if (missing := [r for r in rows if r not in self.ready[source]])
        }
        if len(asks) == 2 and not any(
            self.bridge.pair.members[s].runner.cheap_extra_rows for s in asks
        ):
            with ThreadPoolExecutor(1, thread_name_prefix="baco-fetch") as helper:
                (source, rows), (other, other_rows) = asks.items()
                elsewhere = helper.submit(self._request, other, other_rows)
                try:
                    fetched = self._request(source, rows)
                finally:
                    fetched_elsewhere = elsewhere.result()
            self._store(source, rows, fetched)
            self._store(other, other_rows, fetched_elsewhere)
            return
        for source, rows in asks.items():
            self._store(source, rows, self._request(source, rows))

    def _request(self, source: int, missing: list[int]) -> Fetched:
        try:
            return self.bridge.distributions(source, missing, self.writers)
        except RowsFailed as failed:  # a remote engine failed for some rows: their request
            row, error = next(iter(failed.errors.items()))
            group = next(g for g in self.groups if g.start <= row < g.stop)
            raise RequestFailed(group.request, error) from error

    def _store(self, source: int, missing: list[int], fetched: Fetched) -> None:
        self.logits[source] = fetched.logits
        if fetched.proposals is not None:
            self.proposals[source] = fetched.proposals
        if fetched.rest_mass is not None:
            self.rest_mass[source] = fetched.rest_mass
        self.ready[source].update(missing)
        for key in [k for k in self._cache if k[1] == source]:
            del self._cache[key]

    def _get(self, group: Group, source: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (group.start, source)
        cached = self._cache.get(key)
        if cached is None:
            sampler = group.request.sampler
            logits = self.logits[source][group.slice]
            tempered = sampler.temper(self._constrained(group, source, logits))
            cached = self._cache[key] = (tempered, sampler.truncate(tempered))
        return cached

    def _constrained(self, group: Group, source: int, logits: torch.Tensor) -> torch.Tensor:
        matchers = group.request.matchers
        if matchers is None:
            return logits
        views = [self.bridge.view(source, row) for row in range(group.start, group.stop)]
        return matchers.apply(source, logits, self.rows[group.slice], views)

    def proposal(self, group: Group, source: int, row: int) -> int:
        """The token ``source``'s engine drew for ``row`` (-1: none, or a constrained request,
        whose grammar the engine does not know)."""
        drawn = self.proposals.get(source)
        return -1 if drawn is None or group.request.matchers is not None else drawn[row]

    def tempered(self, group: Group, source: int) -> torch.Tensor:
        return self._get(group, source)[0]

    def rest(self, group: Group, source: int) -> torch.Tensor | None:
        """The group's rows' unlisted mass from a top-k source (None: a full distribution)."""
        rest = self.rest_mass.get(source)
        return None if rest is None else rest[group.slice]

    def probabilities(self, group: Group, source: int) -> torch.Tensor:
        """What the routers read: the tempered, untruncated distribution. For a top-k backend
        the listed tokens keep their own probabilities (the unlisted mass is not spread over
        them): exact at temperature 1, an estimate otherwise (docs/remote.md)."""
        tempered = self.tempered(group, source)
        rest = self.rest_mass.get(source)
        if rest is None:
            return torch.softmax(tempered, dim=-1)
        return _top_k_probabilities(tempered, rest[group.slice], group.request.sampler.temperature)

    def truncated(self, group: Group, source: int) -> torch.Tensor:
        return self._get(group, source)[1]

    def by_source(
        self, group: Group, sources: torch.Tensor, rows: Sequence[int], host: Sequence[int]
    ) -> torch.Tensor:
        """Each row's truncated scores from the model ``sources`` names (``[group rows,
        width]``); ``host`` is ``sources`` on the host, read only for ``rows``."""
        picked = {s: self.truncated(group, s) for s in {host[r] for r in rows}}
        if len(picked) == 1:
            return next(iter(picked.values()))
        return torch.where((sources == BASE)[:, None], picked[BASE], picked[ALIGNED])


def _top_k_probabilities(
    tempered: torch.Tensor, rest: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Probabilities of the k listed tokens at ``temperature`` from their tempered log-probs
    ``l/T`` and the raw mass ``R`` of the others. The others' tempered mass is taken as
    ``R * p_k ** (1/T - 1)`` (``p_k``: the least listed probability): exactly ``R`` at T = 1
    (so each listed token keeps its own probability), an upper bound for T < 1 and a lower
    bound for T > 1 (docs/remote.md, Routing signals)."""
    # Greedy (temperature 0): the routers read the plain softmax, as at T = 1.
    t = temperature if temperature > 0 else 1.0
    listed = torch.isfinite(tempered)
    least = tempered.masked_fill(~listed, float("inf")).amin(dim=-1, keepdim=True)
    log_rest = torch.log(rest.clamp_min(1e-30))[:, None] + least * (1.0 - t)
    log_total = torch.logaddexp(torch.logsumexp(tempered, dim=-1, keepdim=True), log_rest)
    return torch.exp(tempered - log_total)


def _draw(
    group: Group,
    scores: torch.Tensor,
    rows: Sequence[int],
    randomness: RowRandomness,
) -> torch.Tensor:
    """A token for each of ``rows`` (batch indices in ``group``) from its row of ``scores``
    (``[group rows, width]``), with the rows' own random numbers."""
    local = [r - group.start for r in rows]
    picked = scores if len(local) == scores.shape[0] else scores[local]
    return group.request.sampler.draw(picked, lambda width: randomness.exponential(rows, width))


class Step:
    """Decide every row's next token and its source for one step of a batch.

    A step reads in phases, as nano-vllm's schedule → run → postprocess: each phase first
    says which rows need which model's distribution, fetches them (one call per runner),
    then decides. The phases are the proposals (each row's writer), the routers' inputs at
    word boundaries, and the hand-over (the incoming model of a row that switches); a later
    phase fetches only what an earlier one did not.
    """

    def __init__(
        self,
        pair: Pair,
        bridge: Bridge,
        rows: Sequence[SampleRecord],
        groups: Sequence[Group],
        writers: torch.Tensor,
        writers_host: list[int],
        randomness: RowRandomness,
        continuation: torch.Tensor,
        record: bool = False,
    ) -> None:
        self.pair, self.groups = pair, groups
        self.writers, self.writers_host = writers, writers_host
        self.randomness, self.continuation = randomness, continuation
        self.scores = StepScores(bridge, rows, writers_host, groups)
        #: With ``record`` (a call asked for log-probs): each row's scores its token was
        #: drawn from, ``[rows, width]``.
        self.drawn_from = (
            torch.full((len(writers_host), pair.width), float("-inf"), device=writers.device)
            if record
            else None
        )

    def run(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens, sources)``, one per row."""
        # A model that runs for its rows' proposals brings every row up to date in the same
        # work (across families, a row another model wrote is re-tokenized into it): extra
        # rows in a forward are cheap, another forward is not. A remote model pays per row.
        every_row = list(range(len(self.writers_host)))
        needs = {}
        for w in set(self.writers_host) - {NO_SOURCE}:
            cheap = self.pair.members[w].runner.cheap_extra_rows
            needs[w] = every_row if cheap else [r for r in every_row if self.writers_host[r] == w]
        self.scores.fetch(needs)
        stay = self._proposals()
        has_writer = self.writers != NO_SOURCE
        continues = self.continuation[self.writers.clamp_min(0), stay] & has_writer
        if bool(continues.all()):
            return self._guard(stay, self.writers, None)
        boundary = (~continues).tolist()
        self.scores.fetch(self._router_needs(boundary))
        want = self._route(boundary)
        switch = torch.tensor(boundary, device=self.writers.device) & (want != self.writers)
        fresh, switch = self._hand_over(want, switch)
        return self._guard(
            torch.where(switch, fresh, stay), torch.where(switch, want, self.writers), boundary
        )

    def _guard(
        self, tokens: torch.Tensor, sources: torch.Tensor, boundary: list[bool] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``guard``: a base token the aligned model finds implausible (its probability under
        ``guard`` x the aligned top probability) is not kept; the aligned model draws that
        position instead and writes on (docs/routers.md). Across families only the token that
        opens a base word is checked, by its bytes (:mod:`.guard`); ``boundary``: the rows
        at a word boundary this step (None: none)."""
        guarded = [g for g in self.groups if g.request.settings.guard > 0.0]
        if not guarded:
            return tokens, sources
        shared = self.pair.shares_tokenizer
        flags = [
            s == BASE and (shared or (boundary is not None and boundary[row]))
            for row, s in enumerate(sources.tolist())
        ]
        checked = {g.start: g.rows(flags) for g in guarded}
        self.scores.fetch({ALIGNED: [r for rows in checked.values() for r in rows]})
        tokens, sources = tokens.clone(), sources.clone()
        for group in guarded:
            if not (rows := checked[group.start]):
                continue
            local = torch.tensor([r - group.start for r in rows], device=tokens.device)
            probs = self.scores.probabilities(group, ALIGNED)[local]
            drawn = tokens[torch.tensor(rows, device=tokens.device)]
            kept = (
                probs.gather(1, drawn[:, None])[:, 0]
                if shared
                else cross_family_guard(self.pair).kept_mass(probs, drawn.tolist())
            )
            floor = group.request.settings.guard * probs.amax(dim=-1)
            rejected = [r for r, bad in zip(rows, (kept < floor).tolist(), strict=True) if bad]
            if rejected:
                self._redraw(group, rejected, tokens, sources)
        return tokens, sources

    def _redraw(
        self, group: Group, rows: list[int], tokens: torch.Tensor, sources: torch.Tensor
    ) -> None:
        """The aligned model draws ``rows``' tokens (a guard refused the base's). Across
        families the rows are at a word boundary, and an aligned model that takes over from
        the base model starts a new word (the hand-over rule); a row where it cannot keeps
        the base token."""
        scores = self.scores.truncated(group, ALIGNED)
        if not self.pair.shares_tokenizer:
            took_over = (self.writers[group.slice] == BASE)[:, None]
            scores = scores.masked_fill(took_over & self.continuation[ALIGNED], float("-inf"))
            drawable = torch.isfinite(scores).any(dim=-1).tolist()
            rows = [r for r in rows if drawable[r - group.start]]
            if not rows:
                return
        index = torch.tensor(rows, device=tokens.device)
        tokens[index] = _draw(group, scores, rows, self.randomness)
        sources[index] = ALIGNED
        for row in rows:  # a remote aligned engine's own draw, where it has one
            if (token := self.scores.proposal(group, ALIGNED, row)) >= 0:
                tokens[row] = token
        if self.drawn_from is not None:
            self.drawn_from[index] = scores[[r - group.start for r in rows]]

    def _proposals(self) -> torch.Tensor:
        """Each row's writer proposes the next token (rows with no writer yet draw nothing)."""
        stay = torch.zeros_like(self.writers)
        has_writer = [w != NO_SOURCE for w in self.writers_host]
        for group in self.groups:
            if rows := group.rows(has_writer):
                scores = self.scores.by_source(
                    group, self.writers[group.slice], rows, self.writers_host
                )
                index = torch.tensor(rows, device=stay.device)
                stay[index] = _draw(group, scores, rows, self.randomness)
                if self.drawn_from is not None:
                    self.drawn_from[group.slice] = scores
                for row in rows:  # a model that samples itself: its engine's draw
                    if (token := self.scores.proposal(group, self.writers_host[row], row)) >= 0:
                        stay[row] = token
        return stay

    def _router_needs(self, boundary: list[bool]) -> dict[int, list[int]]:
        """The rows at a boundary, per model whose distribution their router reads."""
        needs: dict[int, list[int]] = {ALIGNED: [], BASE: []}
        for group in self.groups:
            if rows := group.rows(boundary):
                for source in (ALIGNED, BASE):
                    if self.pair.members[source].name in group.request.needs:
                        needs[source].extend(rows)
        return needs

    def _route(self, boundary: list[bool]) -> torch.Tensor:
        """The source each row wants next: the router's pick at a boundary, else its writer."""
        want = self.writers.clone()
        for group in self.groups:
            if not (rows := group.rows(boundary)):
                continue
            request = group.request
            probs = {
                source: self.scores.probabilities(group, source)[
                    :, : self.pair.members[source].vocab_size
                ]
                for source in (ALIGNED, BASE)
                if self.pair.members[source].name in request.needs
            }
            prev = self.writers[group.slice]
            at_boundary = torch.tensor(boundary[group.slice], device=want.device)
            inputs = RouterInputs(
                base_probs=probs.get(BASE),
                aligned_probs=probs.get(ALIGNED),
                prev_sources=prev,
                step=request.steps,
                masks=self.pair.aligned.masks,
                generator=request.generator,
                draw_uniform=functools.partial(self._uniform, group, rows, at_boundary),
                base_rest_mass=self.scores.rest(group, BASE),
                aligned_rest_mass=self.scores.rest(group, ALIGNED),
                at_boundary=at_boundary,
                **self._progress(group),
            )
            try:
                choice = checked_choice(request.router(inputs), prev).long()
            except Exception as exc:  # one request's router: fail that request alone
                raise RequestFailed(request, exc) from exc
            want[group.slice] = torch.where(at_boundary, choice, prev)
        return want

    def _progress(self, group: Group) -> dict[str, torch.Tensor]:
        """For a router that tracks shares (``base_share``): each row's sample index in its
        call, tokens written so far and how many of them the base model wrote."""
        if not getattr(group.request.router, "tracks_shares", False):
            return {}
        samples = self.scores.rows[group.slice]
        n = group.request.n
        return {
            "sample_ids": torch.tensor([s.prompt_index * n + s.sample_index for s in samples]),
            "written": torch.tensor([len(s.sources) for s in samples]),
            "base_written": torch.tensor([s.sources.count(BASE) for s in samples]),
            "remaining": torch.tensor(
                [group.request.settings.max_new_tokens - len(s.sources) for s in samples]
            ),
        }

    def _uniform(self, group: Group, rows: list[int], at_boundary: torch.Tensor) -> torch.Tensor:
        """Coins for a router: rows at a boundary draw from their own numbers; the others,
        whose pick is not used, draw nothing (so that no row's draws depend on another's)."""
        coins = torch.ones(group.stop - group.start, device=at_boundary.device)
        coins[at_boundary] = self.randomness.uniform(rows)
        return coins

    def _hand_over(
        self, want: torch.Tensor, switch: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens drawn by the incoming models, which start a new word; a row switches only
        if its incoming model can start one."""
        fresh = torch.zeros_like(self.writers)
        switching = switch.tolist()
        if not any(switching):
            return fresh, switch
        want_host = want.tolist()
        needs: dict[int, list[int]] = {ALIGNED: [], BASE: []}
        for row, moving in enumerate(switching):
            if moving:
                needs[want_host[row]].append(row)
        self.scores.fetch(needs)
        has_writer = self.writers != NO_SOURCE
        for group in self.groups:
            if not (rows := group.rows(switching)):
                continue
            scores = self.scores.by_source(group, want[group.slice], rows, want_host)
            sl = group.slice
            blocked = (switch[sl] & has_writer[sl])[:, None] & self.continuation[want[sl]]
            scores = scores.masked_fill(blocked, float("-inf"))
            drawable = torch.isfinite(scores).any(dim=-1)
            switch[sl] &= drawable
            drawable_host = drawable.tolist()
            if rows := [r for r in rows if drawable_host[r - group.start]]:
                index = torch.tensor(rows, device=fresh.device)
                fresh[index] = _draw(group, scores, rows, self.randomness)
                self._take_proposals(group, rows, want_host, fresh)
                if self.drawn_from is not None:
                    self.drawn_from[index] = scores[[r - group.start for r in rows]]
        return fresh, switch

    def _take_proposals(
        self, group: Group, rows: list[int], want_host: list[int], fresh: torch.Tensor
    ) -> None:
        """An incoming model that samples itself writes its engine's draw when that token
        starts a new word (else the local draw above, within its top-k, stands)."""
        for row in rows:
            source = want_host[row]
            token = self.scores.proposal(group, source, row)
            if token < 0:
                continue
            continues = self.writers_host[row] != NO_SOURCE and bool(
                self.continuation[source, token]
            )
            if not continues:
                fresh[row] = token
