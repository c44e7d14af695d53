"""The escrow grant book (``domain.grant_book``) alone: slot choice, chunk growth, own-spend
expiry, closing idle grants, undo after a lost compare-and-swap, and merging reservations."""

from __future__ import annotations

from datetime import timedelta

from entitle.domain.escrow import Grant, Spent, basis_of
from entitle.domain.grant_book import GrantBook, merge_reservations
from entitle.domain.state import Reservation
from entitle.domain.usage import Footprint
from tests.unit.builders import NOW, lic, state_with

TTL = timedelta(seconds=30)


def _ent(instances=100):
    return state_with(lic("base", instances={"max": instances})).entitlement("acme", NOW)


def _reservation(units, expires, uid="u1", generation=1):
    return Reservation(Footprint("container", units, units), expires, uid, generation)


def _book(**kw):
    return GrantBook("r1", TTL, initial_chunk=4, max_chunk=16, **kw)


def test_the_first_grant_is_a_chunk_of_the_headroom_shared_between_deciders():
    ent = _ent(100)
    grant = _book().next_grant(ent, 0, 0, {}, deciders=1, wall=NOW, basis=basis_of(ent))
    assert (grant.units, grant.expires, grant.replica) == (4, NOW + TTL, "r1")
    # Near the cap the share shrinks to nothing: the last units are held per admission.
    ent = _ent(10)
    assert _book().next_grant(ent, 9, 0, {}, deciders=2, wall=NOW, basis=basis_of(ent)).units == 0


def test_the_chunk_doubles_only_while_grants_are_used_up_and_stops_at_the_maximum():
    ent, book = _ent(10_000), _book()
    sizes = []
    for _ in range(5):
        grant = book.next_grant(ent, 0, 0, {}, 1, NOW, basis_of(ent))
        sizes.append(grant.units)
        book.written(set(), (grant, Spent(units=grant.units)), NOW)      # used up
    assert sizes == [4, 8, 16, 16, 16]
    grant = book.next_grant(ent, 0, 0, {}, 1, NOW, basis_of(ent))
    book.written(set(), (grant, Spent(units=1)), NOW)                   # barely used
    assert book.next_grant(ent, 0, 0, {}, 1, NOW, basis_of(ent)).units == 16


def test_a_slot_needs_room_the_same_caps_and_more_than_half_its_life():
    book, ent = _book(), _ent()
    grant = Grant("r1", "1", 4, None, {}, NOW + TTL, basis_of(ent))
    book.written(set(), (grant, Spent(units=3)), NOW)
    assert book.slot(Spent(units=1), basis_of(ent), NOW) is not None
    assert book.slot(Spent(units=2), basis_of(ent), NOW) is None                 # no room
    assert book.slot(Spent(units=1), "other caps", NOW) is None                  # license changed
    assert book.slot(Spent(units=1), basis_of(ent), NOW + TTL / 2) is None       # half its life gone


def test_own_spends_expire_oldest_first_and_the_rest_stay_in_admission_order():
    book, ent = _book(), _ent()
    grant = Grant("r1", "1", 10, None, {}, NOW + TTL, basis_of(ent))
    book.written(set(), (grant, Spent()), NOW)
    for i, seconds in enumerate((5, 10, 20)):
        book.pay(("ns", f"w{i}"), grant, book.grants[0][1], Spent(units=1),
                 _reservation(1, NOW + timedelta(seconds=seconds), uid=f"u{i}"), NOW)
    assert book.expire_oldest(NOW + timedelta(seconds=12)) == [("ns", "w0"), ("ns", "w1")]
    assert list(book.spends) == [("ns", "w2")] and list(book.spent_from) == [("ns", "w2")]


def test_idle_grants_close_and_what_was_paid_from_them_becomes_plain_holds():
    book, ent = _book(idle_close=timedelta(seconds=1)), _ent()
    grant = Grant("r1", "1", 10, None, {}, NOW + TTL, basis_of(ent))
    book.written(set(), (grant, Spent()), NOW)
    held = book.pay(("ns", "w"), grant, book.grants[0][1], Spent(units=2), _reservation(2, NOW + TTL), NOW)
    assert book.closing(NOW + timedelta(seconds=0.5), superseded=False) == set()
    assert book.closing(NOW + timedelta(seconds=1), superseded=False) == {"1"}         # idle
    assert book.closing(NOW, superseded=True) == {"1"}                               # a new one replaces it
    assert book.paid_from({"1"}, NOW) == {("ns", "w"): held}
    book.written({"1"}, None, NOW)
    assert book.grants == [] and not book.any_closable(NOW)


def test_a_lost_compare_and_swap_undoes_the_attempts_spends_and_grant_use():
    book, ent = _book(), _ent()
    grant = Grant("r1", "1", 10, None, {}, NOW + TTL, basis_of(ent))
    book.written(set(), (grant, Spent()), NOW)
    first = book.pay(("ns", "a"), grant, book.grants[0][1], Spent(units=1), _reservation(1, NOW + TTL, "ua"), NOW)
    book.checkpoint()
    book.pay(("ns", "a"), grant, book.grants[0][1], Spent(units=2), _reservation(2, NOW + TTL, "ua", 2), NOW)
    book.pay(("ns", "b"), grant, book.grants[0][1], Spent(units=1), _reservation(1, NOW + TTL, "ub"), NOW)
    assert book.grants[0][1].units == 4
    book.rollback()
    assert book.grants[0][1].units == 1 and book.spends == {("ns", "a"): first}


def test_merged_reservations_count_at_least_what_each_does():
    a = Reservation(Footprint("container", 2, 2, frozenset({"ann"})), NOW + TTL, "u1", 1)
    b = Reservation(Footprint("container", 5, 5), NOW + TTL / 2, "u1", 2)
    merged = merge_reservations(a, b)
    assert (merged.footprint.units, merged.footprint.users, merged.generation, merged.expires) == \
        (5, frozenset({"ann"}), 2, NOW + TTL)
    # Another object of the same name (deleted and recreated): settled as the later admission.
    c = Reservation(Footprint("container", 1, 1), NOW + TTL * 2, "u2", 1)
    assert (merge_reservations(a, c).uid, merge_reservations(a, c).generation) == ("u2", 1)
    assert merge_reservations(None, b) is b
