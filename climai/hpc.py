"""Site profiles: link ``profiles/<name>`` where ``snakemake --profile <name>`` finds it.

Snakemake looks a profile name up in the current folder, then in its user configuration folder
(``~/.config/snakemake`` on Linux, ``$XDG_CONFIG_HOME/snakemake`` when that is set), then in the
site folder. ``climai install-profile leonardo`` links the checkout's ``profiles/leonardo`` into the
user folder, so that the profile stays in step with the checkout (``git pull`` updates it).
"""

from __future__ import annotations

from pathlib import Path

import climai

SITE_PROFILES = ("leonardo", "leonardo-debug")


def repo_profiles_dir() -> Path:
    """``profiles/`` of the checkout climai was installed from (``pip install -e .``)."""
    return Path(climai.__file__).resolve().parents[1] / "profiles"


def snakemake_config_dir() -> Path:
    """The user folder where ``snakemake --profile NAME`` looks (the same lookup as Snakemake)."""
    from platformdirs import AppDirs

    return Path(AppDirs("snakemake", "snakemake").user_config_dir)


def install_profile(
    name: str, profiles_dir: Path | None = None, config_dir: Path | None = None, force: bool = False
) -> Path:
    """Link ``<profiles_dir>/<name>`` to ``<config_dir>/<name>``; return the link.

    An existing link to the same folder is kept; anything else there is an error unless ``force``
    (then a link is replaced; a real folder or file is never deleted).
    """
    source = (profiles_dir or repo_profiles_dir()) / name
    if not (source / "profile.yaml").is_file() and not (source / "config.yaml").is_file():
        raise FileNotFoundError(
            f"profile {name!r}: no profile.yaml in {str(source)!r} (profiles here: "
            f"{', '.join(sorted(p.name for p in source.parent.glob('*/profile.yaml'))) or 'none'}; "
            "install climai from a checkout with `pip install -e .` or pass --profiles-dir)"
        )
    target = (config_dir or snakemake_config_dir()) / name
    if target.is_symlink():
        if target.resolve() == source.resolve():
            return target
        if not force:
            raise FileExistsError(
                f"{str(target)!r} already links to {str(target.resolve())!r}, not {str(source)!r}; "
                "pass --force to relink it"
            )
        target.unlink()
    elif target.exists():
        raise FileExistsError(
            f"{str(target)!r} exists and is not a link: move it away, then rerun "
            "`climai install-profile`"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source.resolve(), target_is_directory=True)
    return target
