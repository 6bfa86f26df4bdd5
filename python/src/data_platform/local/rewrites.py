"""The two things a local run swaps in a pod's agent command line, whatever the back-end: the
code (the tenant's working copy instead of what CI published) and the secrets (files on this
machine instead of Key Vault, through task-agent's own `file:` provider). Pure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from data_platform.agent_command import COMMAND_SEPARATOR, vault_of


def with_snapshot(argv: Sequence[str], snapshot: str) -> list[str]:
    """`--snapshot URI --snapshot-sha256 HEX` replaced by `snapshot` (`URI#sha256=HEX` or `URI`)."""
    uri, _, fragment = snapshot.partition("#")
    sha256 = fragment.removeprefix("sha256=") if fragment else None
    options, rest = _split(argv)
    kept: list[str] = []
    skip = False
    for index, word in enumerate(options):
        if skip:
            skip = False
            continue
        if word in ("--snapshot", "--snapshot-sha256") and index + 1 < len(options):
            skip = True
            continue
        kept.append(word)
    added = ["--snapshot", uri, *(["--snapshot-sha256", sha256] if sha256 else [])]
    # After `run` (the subcommand), before the other options.
    return [*kept[:2], *added, *kept[2:], *rest]


def with_local_secrets(argv: Sequence[str], secrets_dir: Path) -> list[str]:
    """`--secret NAME=VAULT/SECRET` (and `--secret-file`) read `file:SECRETS_DIR/VAULT/SECRET`."""
    options, rest = _split(argv)
    out = list(options)
    for index, word in enumerate(options[:-1]):
        if word not in ("--secret", "--secret-file"):
            continue
        target, _, reference = options[index + 1].partition("=")
        vault = vault_of(reference)
        if vault is None:
            continue
        out[index + 1] = f"{target}=file:{secrets_dir / vault / _secret_name(reference)}"
    # The vault allow-list names vaults; the local files are the tenant's own.
    return [*_without_option(out, "--allowed-vaults"), *rest]


def _secret_name(reference: str) -> str:
    """NAME of `VAULT/NAME[/VERSION]` or `https://VAULT.vault.azure.net/secrets/NAME[/VERSION]`
    (a version is not kept: a local file has one)."""
    if "://" in reference:
        return reference.split("/secrets/", 1)[1].split("/")[0]
    return reference.split("/")[1]


def _split(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    words = list(argv)
    if COMMAND_SEPARATOR in words:
        split = words.index(COMMAND_SEPARATOR)
        return words[:split], words[split:]
    return words, []


def _without_option(words: list[str], option: str) -> list[str]:
    out: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
            continue
        if word == option:
            skip = True
            continue
        out.append(word)
    return out
