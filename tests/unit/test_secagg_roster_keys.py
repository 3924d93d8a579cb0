"""Which identity keys a party checks, and when: every member's, once, in share().

A party does not check the other members' commitment signatures when it advertises:
each member's advert, signed over H(L), vouches for its commitment, since a member
advertises only for a list holding its own. In share() it checks every advert under
its member's CA-checked identity key, neighbour or not. docs/THREAT_MODEL.md, "Why
every advert is checked", gives the attack that checking only the neighbourhood would
let through; the tests here play it.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator, Mapping

import pytest

from blindsum.crypto.sign import SigningKey, VerifyKey
from blindsum.errors import InvalidArgument, InvalidSignature, UnsafeRequest
from blindsum.protocol import params
from blindsum.protocol.secagg import Advert, PartyStage, SecAggParty
from blindsum.transport import pki
from blindsum.transport.pki import Identity, Role
from tests.drbg import drbg
from tests.unit.test_secagg_attacks import Round, advertised, committed, found_round

N = 100  # sparse under the default threat model: degree 42, so 57 non-neighbours each


class CountingKeys(Mapping[str, VerifyKey]):
    """A key mapping that counts how often each key is read."""

    def __init__(self, keys: Mapping[str, VerifyKey]) -> None:
        self._keys = dict(keys)
        self.reads: Counter[str] = Counter()

    def __getitem__(self, party: str) -> VerifyKey:
        key = self._keys[party]
        self.reads[party] += 1
        return key

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _advertised() -> Round:
    r = advertised(committed(found_round(N, params.DEFAULT_THREAT_MODEL)))
    assert not r.config.complete
    return r


def _copy(r: Round, party: str) -> SecAggParty:
    """A fresh copy of ``party`` (as after a restart, keys not yet given), so that one
    roster can be tried on every party without spending its single share()."""
    return r.restore(r.parties[party].to_state(), b"copy")


def _forge_signature(advert: Advert) -> Advert:
    sig = bytearray(advert.signature)
    sig[0] ^= 1
    return dataclasses.replace(advert, signature=bytes(sig))


def test_advertise_reads_no_key_and_share_reads_each_once() -> None:
    r = committed(found_round(N, params.DEFAULT_THREAT_MODEL))
    me = r.config.parties[0]
    keys = CountingKeys(r.verify_keys)
    advert = r.parties[me].advertise(r.server.commits(), keys)
    assert not keys.reads
    r.server.add_advert(advert, r.verify_keys[me])
    for p in r.config.parties[1:]:
        r.server.add_advert(r.parties[p].advertise(r.server.commits()), r.verify_keys[p])
    r.server.close_advertise()
    r.parties[me].share(r.server.roster())  # keys from advertise(), read now
    assert set(keys.reads) == set(r.config.parties) - {me}
    assert set(keys.reads.values()) == {1}


def test_a_forged_advert_is_refused_by_every_party_not_only_its_neighbours() -> None:
    """The aggregator stands a member it controls in L (here: a real member's advert
    with a forged signature). Were only neighbourhoods checked, only the forgery's
    own neighbours would refuse: it would take a whole window of the ring out of the
    round while counting in the floors as a member, which the connectivity argument
    does not allow for (docs/THREAT_MODEL.md, "Why every advert is checked").
    Every party checks every advert, so every party refuses."""
    r = _advertised()
    roster = r.server.roster()
    victim = r.config.parties[7]
    forged = {**roster, victim: _forge_signature(roster[victim])}
    neighbours_of_victim = 0
    for p in r.config.parties:
        if p == victim:
            continue
        party = _copy(r, p)
        with pytest.raises(UnsafeRequest, match=f"advert of {victim!r} is not signed"):
            party.share(forged, r.verify_keys)
        assert party.stage is PartyStage.ADVERTISED
        probe = _copy(r, p)
        probe.share(roster, r.verify_keys)
        neighbours_of_victim += victim in probe.neighbours
    assert 0 < neighbours_of_victim < N - 1  # most refusers are not its neighbours


def test_a_member_whose_certificate_fails_is_refused_by_name() -> None:
    r = _advertised()
    me = r.config.parties[0]
    ca, rogue = pki.create_ca(), pki.create_ca("rogue CA")
    certs = {
        p: pki.issue_identity_cert(ca, Identity(Role.PARTY, p), k.verify_key.raw)
        for p, k in r.keys.items()
    }
    probe = _copy(r, me)
    probe.share(r.server.roster(), pki.CertifiedKeys(certs, ca.cert_pem))
    stranger = sorted(set(r.config.parties) - probe.neighbours - {me})[0]
    certs[stranger] = pki.issue_identity_cert(
        rogue, Identity(Role.PARTY, stranger), r.keys[stranger].verify_key.raw
    )
    party = _copy(r, me)
    with pytest.raises(UnsafeRequest, match=f"identity certificate of {stranger!r}") as info:
        party.share(r.server.roster(), pki.CertifiedKeys(certs, ca.cert_pem))
    assert info.value.field == "adverts"
    del certs[stranger]
    with pytest.raises(UnsafeRequest, match=f"no identity key for {stranger!r}"):
        party.share(r.server.roster(), pki.CertifiedKeys(certs, ca.cert_pem))
    assert party.stage is PartyStage.ADVERTISED


def test_share_after_a_restart_needs_the_keys_again() -> None:
    r = _advertised()
    me = r.config.parties[0]
    party = _copy(r, me)
    with pytest.raises(Exception, match="pass verify_keys") as info:
        party.share(r.server.roster())
    assert getattr(info.value, "field", None) == "verify_keys"
    party.share(r.server.roster(), r.verify_keys)
    # After share() the state holds every member's checked key, for the signatures.
    restored = r.restore(party.to_state(), b"after-share")
    assert restored.to_state() == party.to_state()
    with pytest.raises(InvalidArgument):
        r.restore(party.to_state().replace(b'"verify_keys":{', b'"verify_keys":{"zz":"00",'))


def test_certified_keys_check_each_certificate_on_first_read_only() -> None:
    ca = pki.create_ca()
    alice = SigningKey.generate(drbg(b"alice"))
    certs = {
        "alice": pki.issue_identity_cert(ca, Identity(Role.PARTY, "alice"), alice.verify_key.raw),
        "bob": pki.issue_identity_cert(ca, Identity(Role.PARTY, "mallory"), alice.verify_key.raw),
    }
    keys = pki.CertifiedKeys(certs, ca.cert_pem)
    assert len(keys) == 2 and set(keys) == {"alice", "bob"} and keys.checked == 0
    assert keys["alice"] == alice.verify_key
    assert keys["alice"] == alice.verify_key and keys.checked == 1
    with pytest.raises(InvalidArgument, match="expected spiffe://blindsum/party/bob"):
        keys["bob"]  # a certificate for another name is no key for bob
    with pytest.raises(KeyError):
        keys["carol"]
    with pytest.raises(InvalidSignature):
        pki.CertifiedKeys(certs, pki.create_ca("other").cert_pem)["alice"]
    with pytest.raises(InvalidArgument):
        pki.CertifiedKeys(certs, certs["alice"])  # not a CA
    assert "checked" in repr(keys) and "BEGIN" not in repr(keys)
