from __future__ import annotations

import pytest

from blindsum.crypto import _field, shamir
from blindsum.errors import Aborted, InvalidArgument
from tests.drbg import drbg


def test_share_bytes_is_field_size() -> None:
    assert shamir.SHARE_BYTES == 66
    assert _field.P.bit_length() == 521


def test_split_reconstruct_basic() -> None:
    secret = bytes(range(32))
    shares = shamir.split(secret, threshold=3, xs=[1, 2, 3, 4, 5], rand=drbg(b"s"))
    assert sorted(shares) == [1, 2, 3, 4, 5]
    assert shamir.reconstruct([shares[5], shares[2], shares[4]], threshold=3, secret_len=32) == (
        secret
    )


def test_leading_zero_bytes_survive() -> None:
    secret = bytes(31) + b"\x01"
    shares = shamir.split(secret, threshold=2, xs=[7, 9], rand=drbg(b"z"))
    assert shamir.reconstruct(list(shares.values()), threshold=2, secret_len=32) == secret


def test_threshold_one_shares_are_the_secret() -> None:
    secret = b"\x05" * 16
    shares = shamir.split(secret, threshold=1, xs=[1, 2], rand=drbg(b"t"))
    assert all(s.y == int.from_bytes(secret, "big") for s in shares.values())


def test_share_bytes_round_trip_and_validation() -> None:
    share = shamir.split(b"k" * 32, threshold=2, xs=[1, 2], rand=drbg(b"b"))[2]
    data = share.to_bytes()
    assert len(data) == 66
    assert shamir.Share.from_bytes(2, data) == share
    with pytest.raises(InvalidArgument):
        shamir.Share.from_bytes(2, data[:-1])
    with pytest.raises(InvalidArgument):
        shamir.Share.from_bytes(2, _field.P.to_bytes(66, "big"))
    for bad_x in (0, -1, (1 << 32) + 1):
        with pytest.raises(InvalidArgument):
            shamir.Share.from_bytes(bad_x, data)


def test_share_value_hidden_from_repr() -> None:
    share = shamir.Share(x=3, y=123456789123456789)
    assert "123456789123456789" not in repr(share)


@pytest.mark.parametrize(
    ("secret", "threshold", "xs", "field"),
    [
        (b"", 1, [1], "secret"),
        (bytes(65), 1, [1], "secret"),
        (b"s", 0, [1], "threshold"),
        (b"s", 3, [1, 2], "threshold"),
        (b"s", 2, [1, 1, 2], "xs"),
        (b"s", 1, [0, 1], "xs"),
        (b"s", 1, [1 << 33], "xs"),
    ],
)
def test_split_validation(secret: bytes, threshold: int, xs: list[int], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        shamir.split(secret, threshold=threshold, xs=xs, rand=drbg(b"v"))
    assert info.value.field == field


def test_reconstruct_needs_threshold_distinct_shares() -> None:
    shares = shamir.split(b"q" * 32, threshold=3, xs=[1, 2, 3], rand=drbg(b"r"))
    with pytest.raises(InvalidArgument) as info:
        shamir.reconstruct([shares[1], shares[2], shares[2]], threshold=3, secret_len=32)
    assert info.value.field == "shares"


def test_reconstruct_rejects_conflicting_duplicates() -> None:
    shares = shamir.split(b"q" * 32, threshold=2, xs=[1, 2, 3], rand=drbg(b"r"))
    forged = shamir.Share(x=1, y=(shares[1].y + 1) % _field.P)
    with pytest.raises(InvalidArgument):
        shamir.reconstruct([shares[1], forged, shares[2]], threshold=2, secret_len=32)


def test_reconstruct_rejects_oversized_result() -> None:
    shares = shamir.split(b"\xff" * 32, threshold=2, xs=[1, 2], rand=drbg(b"o"))
    with pytest.raises(InvalidArgument) as info:
        shamir.reconstruct(list(shares.values()), threshold=2, secret_len=16)
    assert info.value.field == "secret"


def test_reconstruct_uses_smallest_xs_and_caches_weights() -> None:
    shares = shamir.split(b"c" * 32, threshold=3, xs=range(1, 9), rand=drbg(b"c"))
    shamir.lagrange_weights.cache_clear()
    for subset in ([8, 1, 2, 3, 7], [3, 2, 1], [1, 2, 3, 4, 5, 6]):
        got = shamir.reconstruct([shares[x] for x in subset], threshold=3, secret_len=32)
        assert got == b"c" * 32
    info = shamir.lagrange_weights.cache_info()
    assert info.misses == 1
    assert info.hits == 2


def test_lagrange_weights_interpolate_constant_term() -> None:
    xs = (2, 5, 11)
    weights = shamir.lagrange_weights(xs)
    # f(x) = 7 + 3x + 2x^2
    values = [(7 + 3 * x + 2 * x * x) % _field.P for x in xs]
    assert sum(w * v for w, v in zip(weights, values, strict=True)) % _field.P == 7
    with pytest.raises(InvalidArgument):
        shamir.lagrange_weights((1, 1))
    with pytest.raises(InvalidArgument):
        shamir.lagrange_weights(())


def test_field_helpers() -> None:
    a, b = _field.P - 1, 5
    assert _field.add(a, b) == 4
    assert _field.sub(b, a) == 6
    assert _field.mul(_field.inv(b), b) == 1
    assert _field.poly_eval([1, 2, 3], 2) == 17
    with pytest.raises(ZeroDivisionError):
        _field.inv(_field.P)


# --------------------------------------------------------------------------- recover


SECRET = bytes(range(1, 33))


def _shares(threshold: int, xs: list[int], secret: bytes = SECRET) -> dict[int, shamir.Share]:
    return shamir.split(secret, threshold=threshold, xs=xs, rand=drbg(b"recover"))


def _off(share: shamir.Share, delta: int = 1) -> shamir.Share:
    """The share moved off the polynomial by ``delta``."""
    return shamir.Share(share.x, (share.y + delta) % _field.P)


def _is_secret(secret: bytes) -> bool:
    return secret == SECRET


def test_recover_with_good_shares_checks_one_more_and_flags_nothing() -> None:
    shares = _shares(3, [1, 2, 3, 4, 5])
    got = shamir.recover(list(shares.values()), threshold=3, secret_len=32, verify=_is_secret)
    assert got.secret == SECRET
    assert got.bad == ()
    assert got.checked == (1, 2, 3, 4)  # the t smallest x and one more
    exact = shamir.recover(
        [shares[x] for x in (5, 2, 4)], threshold=3, secret_len=32, verify=_is_secret
    )
    assert (exact.secret, exact.bad, exact.checked) == (SECRET, (), (2, 4, 5))
    assert "Recovered(bad=" in repr(got) and SECRET.hex() not in repr(got)


@pytest.mark.parametrize("bad_x", [1, 2, 3, 4, 5])
def test_recover_finds_one_bad_share_anywhere_among_t_plus_one(bad_x: int) -> None:
    shares = _shares(3, [1, 2, 3, 4])
    if bad_x in shares:
        shares[bad_x] = _off(shares[bad_x])
    else:  # a fifth holder: still found, since it is the extra share checked
        shares = _shares(3, [1, 2, 3, 5])
        shares[5] = _off(shares[5])
    got = shamir.recover(list(shares.values()), threshold=3, secret_len=32, verify=_is_secret)
    assert got.secret == SECRET
    assert got.bad == (bad_x,)
    assert got.checked == tuple(sorted(shares))


def test_recover_finds_every_bad_share_once_one_is_found() -> None:
    shares = _shares(3, list(range(1, 9)))
    for x in (1, 5, 8):
        shares[x] = _off(shares[x], delta=x)
    got = shamir.recover(list(shares.values()), threshold=3, secret_len=32, verify=_is_secret)
    assert got.secret == SECRET
    assert got.bad == (1, 5, 8)
    assert got.checked == tuple(range(1, 9))


def test_recover_trusts_t_plus_one_agreeing_shares() -> None:
    """What recover does not do: once the t smallest shares verify and the next one
    agrees, the rest are not looked at, so a bad share further on goes unnamed."""
    shares = _shares(3, [1, 2, 3, 4, 5, 6])
    shares[6] = _off(shares[6])
    got = shamir.recover(list(shares.values()), threshold=3, secret_len=32, verify=_is_secret)
    assert (got.secret, got.bad, got.checked) == (SECRET, (), (1, 2, 3, 4))


def test_recover_aborts_when_fewer_than_t_shares_are_good() -> None:
    shares = _shares(3, [1, 2, 3, 4])
    for x in (2, 4):
        shares[x] = _off(shares[x])
    with pytest.raises(Aborted) as info:
        shamir.recover(list(shares.values()), threshold=3, secret_len=32, verify=_is_secret)
    assert info.value.field == "shares"
    assert "no 3 of the 4 shares" in str(info.value)


def test_recover_aborts_when_exactly_t_shares_hold_a_bad_one() -> None:
    shares = _shares(3, [1, 2, 3])
    shares[2] = _off(shares[2])
    with pytest.raises(Aborted):
        shamir.recover(list(shares.values()), threshold=3, secret_len=32, verify=_is_secret)


def test_recover_aborts_when_the_secret_fails_its_check() -> None:
    """Good shares of a secret that does not match its commitment: nothing verifies."""
    shares = _shares(2, [1, 2, 3])
    with pytest.raises(Aborted):
        shamir.recover(
            list(shares.values()), threshold=2, secret_len=32, verify=lambda s: s != SECRET
        )


def test_recover_search_is_capped_by_max_attempts() -> None:
    shares = _shares(2, [1, 2, 3, 4, 5])
    shares[1] = _off(shares[1])
    shares[2] = _off(shares[2])
    # The distinct t-subsets in search order: {1,2}, then leaving one out {2,3} and
    # {1,3}, then leaving two out {3,4}: the first with no bad share is the fourth.
    with pytest.raises(Aborted):
        shamir.recover(
            list(shares.values()), threshold=2, secret_len=32, verify=_is_secret, max_attempts=3
        )
    got = shamir.recover(
        list(shares.values()), threshold=2, secret_len=32, verify=_is_secret, max_attempts=4
    )
    assert (got.secret, got.bad, got.checked) == (SECRET, (1, 2), (1, 2, 3, 4, 5))


def test_recover_input_checks() -> None:
    shares = _shares(3, [1, 2, 3, 4])
    listed = list(shares.values())
    forged = shamir.Share(x=2, y=(shares[2].y + 1) % _field.P)
    with pytest.raises(InvalidArgument, match="conflicting") as info:
        shamir.recover([*listed, forged], threshold=3, secret_len=32, verify=_is_secret)
    assert info.value.field == "shares"
    # Identical repeats are harmless and count once.
    got = shamir.recover([*listed, shares[1]], threshold=3, secret_len=32, verify=_is_secret)
    assert got.checked == (1, 2, 3, 4)
    with pytest.raises(InvalidArgument, match="need 3 distinct shares, got 2") as info:
        shamir.recover(
            [shares[1], shares[2], shares[2]], threshold=3, secret_len=32, verify=_is_secret
        )
    assert info.value.field == "shares"
    with pytest.raises(InvalidArgument):
        shamir.recover([*listed[:2], "share"], threshold=3, secret_len=32, verify=_is_secret)  # type: ignore[list-item]  # not a Share
    with pytest.raises(InvalidArgument) as info:
        shamir.recover(listed, threshold=0, secret_len=32, verify=_is_secret)
    assert info.value.field == "threshold"


def test_recover_skips_results_too_long_for_the_secret() -> None:
    """A subset whose value does not fit secret_len bytes is a failed attempt, not an
    error: the bad share is left out and named."""
    short = b"\x07" * 16
    shares = shamir.split(short, threshold=2, xs=[1, 2, 3], rand=drbg(b"len"))
    shares[1] = _off(shares[1], delta=1 << 300)
    got = shamir.recover(
        list(shares.values()), threshold=2, secret_len=16, verify=lambda s: s == short
    )
    assert (got.secret, got.bad) == (short, (1,))


def test_recover_does_not_name_honest_holders_when_bad_shares_cancel_at_zero() -> None:
    shares = _shares(3, [1, 2, 3, 4, 5, 6, 7])
    w = shamir.lagrange_weights((1, 2, 3))
    # d1 * w1 + d2 * w2 = 0: the subset {1, 2, 3} still interpolates the secret at 0.
    d1 = 12345
    d2 = (-d1 * w[0] * _field.inv(w[1])) % _field.P
    shares[1], shares[2] = _off(shares[1], d1), _off(shares[2], d2)
    got = shamir.recover(list(shares.values()), threshold=3, secret_len=32, verify=_is_secret)
    assert got.secret == SECRET
    # 5 good shares against 2 bad ones (m >= t + 2e): the true polynomial is the one
    # most shares agree with, and only 1 and 2 are off it.
    assert got.bad == (1, 2)


@pytest.mark.parametrize("bad", [(110, 111), (1, 2), (5, 50, 100, 150)])
def test_recover_decodes_many_holders_without_a_subset_search(bad: tuple[int, ...]) -> None:
    """At the default n = 1,000 parameters (t = 111 of 171 holders), two colluding bad
    shares just below the t-th smallest x used to need C(113, 2) subsets, more than the
    search allows, and aborted the round. Reed-Solomon decoding finds the secret and
    every bad share within (m - t) / 2 errors, with one attempt."""
    xs = list(range(1, 172))
    shares = _shares(111, xs)
    given = [_off(shares[x], 7) if x in bad else shares[x] for x in xs]
    got = shamir.recover(given, threshold=111, secret_len=32, verify=_is_secret, max_attempts=1)
    assert (got.secret, got.bad) == (SECRET, bad)


def test_colluding_holders_cannot_get_an_honest_holder_named() -> None:
    """Two colluders among t + 1 revealers can place their shares on a polynomial g with
    g(0) = the secret through t - 2 honest shares; g is then the polynomial most
    shares agree with, and its outlier is honest. With max_bad = 2 (the colluders the
    round's threat model allows) recover returns the secret and names nobody; with
    max_bad = 0 (no colluders assumed) it names the outlier, which is why the server
    passes the model's corrupt-holder count."""
    t = 5
    xs = [1, 2, 3, 4, 5, 6]
    shares = _shares(t, xs)
    value = int.from_bytes(SECRET, "big")
    # g through (0, s), holders 1..3 and a moved value at 5; holders 5 and 6 follow g.
    g = {0: value, 1: shares[1].y, 2: shares[2].y, 3: shares[3].y, 5: (shares[5].y + 1) % _field.P}
    basis = tuple(sorted(g))

    def on_g(x: int) -> int:
        return shamir._value_at(g, basis, x)

    given = [shares[1], shares[2], shares[3], shares[4]] + [
        shamir.Share(x, on_g(x)) for x in (5, 6)
    ]
    careful = shamir.recover(given, threshold=t, secret_len=32, verify=_is_secret, max_bad=2)
    assert careful.secret == SECRET and careful.bad == ()
    naive = shamir.recover(given, threshold=t, secret_len=32, verify=_is_secret, max_bad=0)
    assert naive.secret == SECRET and naive.bad == (4,)  # the honest holder: hence max_bad
