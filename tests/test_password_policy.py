"""The password policy as a table: what is refused and why, what random passwords pass;
NFKC normalisation in hashing and verifying. Pure unit tests: no database, no app."""
import random
import string
import unicodedata

import pytest
from zxcvbn.frequency_lists import FREQUENCY_LISTS

from web.accounts import passwords

USERNAME, EMAIL = "marguerite", "m.dubois@example.org"

REFUSED = [
    # (password, words of the reason)
    ("aaaaaaaaaaaaaaa", "repeats a pattern"),
    (" " * 15, "repeats a pattern"),
    ("😀" * 15, "repeats a pattern"),
    ("passwordpassword", "repeats a pattern"),
    ("iloveyouiloveyou", "repeats a pattern"),
    ("hello world hello world", "repeats a pattern"),
    ("P@$$w0rd!P@$$w0rd?", "repeats a pattern"),
    ("ｐａｓｓｗｏｒｄｐａｓｓｗｏｒｄ", "repeats a pattern"),  # full-width: NFKC makes it passwordpassword
    ("123456789012345", "repeats a pattern"),
    ("abcdefghijklmnop", "sequence"),
    ("zyxwvutsrqponmlk", "sequence"),
    ("a b c d e f g h i j k", "sequence"),
    ("abcdefgh12345678zyxwvuts", "sequence"),
    ("qwertyuiopasdfghjklzxcvbnm1234567890", "pattern of keys"),
    ("asdfghjkl;'zxcvbnm,./", "pattern of keys"),
    ("1qaz2wsx3edc4rfv5tgb", "pattern of keys"),
    ("mailcreated5240", "most common"),  # an entry of the breach list
    ("Password123456!", "common one with a few characters added"),
    ("iloveyou12345678", "common one with a few characters added"),
    ("!!!!sunshine!!!!", "common one with a few characters added"),
    ("monkey123456789!", "common word"),
    ("monkeydragonsoccerhockey", "common word"),
    ("1990-12-31 birthday", "date"),
    ("correct horse battery staple", "well-known phrase"),
    ("Correct-Horse_Battery staple 2024!", "well-known phrase"),
    ("may the force be with you", "well-known phrase"),
    ("to be or not to be that is the question", "well-known phrase"),
    ("never gonna give you up!", "well-known phrase"),
    ("Gatehouse2024!!!", "the name Gatehouse"),
    ("G4teh0use is my home", "Gatehouse's name"),
    ("esuohetag is where i live", "Gatehouse's name"),
    ("marguerite loves cheese", "your username"),
    ("Margu3rite1234567", "your username"),
    ("m.dubois flowers garden", "your email address"),
]


@pytest.mark.parametrize("password, reason", REFUSED, ids=[repr(p[:24]) for p, _ in REFUSED])
def test_a_guessable_password_is_refused_with_its_reason(password, reason):
    message = passwords.problem(password, USERNAME, EMAIL)
    assert message is not None and reason in message, message


def diceware_words() -> list[str]:
    """7,776 words as in diceware, taken from the estimator's own English list (ranks from
    500 on, 4 to 8 letters): words it knows well, the hardest case for a passphrase."""
    words = FREQUENCY_LISTS["english_wikipedia"][500:]
    return [word for word in words if word.isalpha() and 4 <= len(word) <= 8][:7776]


def random_passwords() -> list[str]:
    rng = random.Random(80063)
    words = diceware_words()
    phrases = [" ".join(rng.choice(words) for _ in range(4)) for _ in range(8)]
    phrases += ["-".join(rng.choice(words).capitalize() for _ in range(4)) for _ in range(4)]
    alphabets = [string.ascii_letters + string.digits, string.printable[:94], string.ascii_lowercase,
                 string.digits + string.punctuation]
    strings = ["".join(rng.choice(alphabet) for _ in range(rng.randint(16, 24)))
               for alphabet in alphabets for _ in range(2)]
    return phrases + strings


@pytest.mark.parametrize("password", random_passwords())
def test_a_random_passphrase_or_string_is_accepted(password):
    assert len(password) >= passwords.MIN_LENGTH
    assert passwords.problem(password, USERNAME, EMAIL) is None


def test_the_test_suites_passwords_are_accepted():
    from conftest import PASSWORD
    assert passwords.problem(PASSWORD, "alice", "alice@example.com") is None


def test_a_mash_of_l33t_symbols_is_estimated_in_short_pieces():
    """zxcvbn would spend seconds on it (every way to read 1, |, 7, ( ... as letters)."""
    mash = "1|7!+$5@4(<[{69" * 4
    pieces = [result["password"] for result in passwords.estimates(mash, [])]
    assert 1 <= len(pieces) <= passwords.MAX_PIECES
    assert all(len(piece) == passwords.PIECE_MIN for piece in pieces)
    assert pieces[0] == mash[:passwords.PIECE_MIN]


def test_plain_text_is_estimated_in_one_piece():
    pieces = passwords.estimates("velvettractorlagoonsunset", [])
    assert [result["password"] for result in pieces] == ["velvettractorlagoonsunset"]


# ---- NFKC ------------------------------------------------------------------------------

COMPOSED = "crème brûlée au café noir"
DECOMPOSED = unicodedata.normalize("NFD", COMPOSED)


async def test_a_password_verifies_however_its_accents_are_typed():
    assert COMPOSED != DECOMPOSED
    password_hash = await passwords.hash_password(DECOMPOSED)
    assert await passwords.verify(COMPOSED, password_hash) == (True, None)
    assert (await passwords.verify(DECOMPOSED, password_hash))[0]


async def test_a_hash_of_the_text_as_typed_still_verifies_and_is_rehashed_normalised():
    typed = "ﬁne ﬁsh in the ﬁrst ﬁord"  # the ligature ﬁ is "fi" in NFKC
    old_hash = passwords.hasher.hash(typed)  # as stored before normalisation

    valid, new_hash = await passwords.verify(typed, old_hash)

    assert valid and new_hash is not None
    assert passwords.hasher.verify("fine fish in the first fiord", new_hash)
    assert await passwords.verify(typed, new_hash) == (True, None)


async def test_a_wrong_password_in_another_form_is_still_wrong():
    password_hash = await passwords.hash_password(COMPOSED)
    assert await passwords.verify("ﬁne ﬁsh in the ﬁrst ﬁord", password_hash) == (False, None)
    assert await passwords.verify("ﬁne ﬁsh in the ﬁrst ﬁord", None) == (False, None)


def test_the_policy_reads_the_normalised_text():
    typed = "ﬁybx7QkmR2vW9z"  # 14 characters as typed, 15 once the ligature is "fi"
    assert len(typed) == passwords.MIN_LENGTH - 1
    assert passwords.problem(typed, USERNAME, EMAIL) is None
