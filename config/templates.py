"""Message and page templates: the package's, under an operator's override folder.

The folder named by ``TIDINGS_TEMPLATES_DIR`` is laid out like the package's::

    email/<locale>/<name>.<part>.j2    code, link, reminder, broadcast; subject, txt, html
    sms/<locale>/<name>.txt.j2         verification, reminder
    pages/link.html                    the magic-link and unsubscribe pages
    sites/<site id>/…                  the same again, for one site only

A site's file wins over the folder's, which wins over the package's. Files and folders
whose name starts with ``_`` are partials for ``{% include %}`` / ``{% extends %}``, which
name templates by their path in that layout (``email/en/code.html.j2`` is the folder's
or else the package's; ``sites/shop/email/_footer.j2`` is the site's).

Everything is compiled, and every override rendered once with sample values, when the
process starts: a broken override stops start-up with one line instead of failing
deliveries later. Renders then look templates up in a dict, without touching the disk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    PrefixLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    select_autoescape,
)

from config.branding import DEFAULT_COLOUR, Brand
from config.settings import ENV_PREFIX, ConfigError

KEY = f"{ENV_PREFIX}TEMPLATES_DIR"

Kind = Literal["email", "sms", "pages"]
KINDS: tuple[Kind, ...] = ("email", "sms", "pages")


@dataclass(frozen=True, slots=True)
class _Spec:
    package: str
    autoescape: bool | Callable[[str | None], bool]
    options: Mapping[str, Any]
    # The package templates an override may replace (None: every one).
    only: frozenset[str] | None = None


_SPECS: dict[Kind, _Spec] = {
    "email": _Spec(
        "tasks.email",
        # The HTML part only; subject and text are plain.
        select_autoescape(enabled_extensions=("html.j2",), default=False),
        {"keep_trailing_newline": True},
    ),
    # Plain text for a phone, not HTML.
    "sms": _Spec("tasks.sms", False, {"trim_blocks": True}),
    # docs.html and outbox.html are operator pages, not seen by people: not overridable.
    "pages": _Spec("webhooks", True, {}, frozenset({"link.html"})),
}

_SAMPLE_BRAND = Brand(
    name="Sample Shop", footer="Sample Shop", colour=DEFAULT_COLOUR, signature="Sample"
)
_LINK = "https://verify.example/v/0123abcd.sample"
# What the callers pass besides the brand (tasks/delivery.py, tasks/broadcasting.py,
# webhooks/links.py), to render each override once at start-up.
_VERIFY = {"code": "123456", "minutes": 10, "link_url": _LINK}
_SAMPLES: dict[tuple[Kind, str], dict[str, Any]] = {
    ("email", "code"): _VERIFY,
    ("email", "link"): {**_VERIFY, "code": ""},
    ("email", "reminder"): _VERIFY,
    ("email", "broadcast"): {
        "subject": "News",
        "text": "Hello",
        "unsubscribe_url": "https://verify.example/unsubscribe/sample",
    },
    ("sms", "verification"): {"code": "123456", "minutes": "10", "domain": "shop.example"},
    ("sms", "reminder"): {"code": "123456", "minutes": "10", "domain": "shop.example"},
    ("pages", "link"): {
        "lang": "en",
        "title": "Confirm your email address",
        "text": "Press the button to confirm your email address for Sample Shop.",
        "button": "Confirm",
        "continue_url": "https://shop.example/welcome",
        "continue_text": "Continue to Sample Shop",
    },
}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


@dataclass(slots=True)
class TemplateSet:
    """One kind's templates, compiled; which file each site gets is decided up front."""

    kind: Kind
    env: Environment
    default: dict[str, Template]
    sites: dict[tuple[str, str], Template] = field(default_factory=dict)

    def get(self, name: str, site: str | None = None) -> Template:
        """The template ``name`` (``en/code.html.j2``, ``link.html``) as ``site`` sees it."""
        if site is not None and (chosen := self.sites.get((site, name))) is not None:
            return chosen
        template = self.default.get(name)
        if template is None:
            # Only without an override folder: the package's own, compiled on first use
            # and kept (Jinja does not look at the file again with auto_reload off).
            template = self.default[name] = self.env.get_template(f"{self.kind}/{name}")
        return template


def build_templates(kind: Kind, root: Path | None, site_ids: Iterable[str] = ()) -> TemplateSet:
    """Compile ``kind``'s templates with the override folder ``root`` (``None``: none).

    Raises :class:`ConfigError` naming the file for an override that is unknown,
    unreadable, not valid Jinja or fails to render with the variables it gets.
    """
    spec = _SPECS[kind]
    package = PackageLoader(spec.package, "templates")
    loaders: list[BaseLoader] = [PrefixLoader({kind: package})]
    if root is not None:
        loaders.insert(0, FileSystemLoader(root))
    env = Environment(
        loader=ChoiceLoader(loaders),
        autoescape=spec.autoescape,  # noqa: S701 - per kind: on for HTML, off for plain text
        undefined=StrictUndefined,
        # Templates are read once: no stat() of a file on every render.
        auto_reload=False,
        **spec.options,
    )
    templates = TemplateSet(kind, env, {})
    if root is None:
        return templates  # the package's, tested with the code: compiled as used
    names = [n for n in package.list_templates() if spec.only is None or n in spec.only]
    overridden = _overrides_in(templates, root / kind, kind, names)
    for name in names:
        sample = _sample(kind, name) if name in overridden else None
        templates.default[name] = _compile(env, f"{kind}/{name}", sample)
    for site in site_ids:
        prefix = f"sites/{site}/{kind}"
        for name in _overrides_in(templates, root / prefix, prefix, names):
            templates.sites[site, name] = _compile(env, f"{prefix}/{name}", _sample(kind, name))
    return templates


def check_folder(root: Path, site_ids: Iterable[str]) -> None:
    """Check the whole override folder: known folders and sites, every file compiled."""
    if not root.is_dir():
        raise ConfigError(f"{KEY}: {root} is not a folder")
    sites = set(site_ids)
    try:
        _check_layout(root, sites)
        for kind in KINDS:
            build_templates(kind, root, sites)
    except OSError as exc:  # a folder without permission, say: still one line
        raise ConfigError(f"{KEY}: {root} cannot be read ({type(exc).__name__})") from None


def _check_layout(root: Path, sites: set[str]) -> None:
    """Folders that nothing would read are typos: refuse them."""
    known = {*KINDS, "sites"}
    for entry in filter(_visible, root.iterdir()):
        if entry.is_dir() and entry.name not in known:
            raise ConfigError(
                f"{KEY}: unknown folder {entry.name!r} (expected {', '.join(sorted(known))})"
            )
    if not (root / "sites").is_dir():
        return
    for entry in filter(_visible, (root / "sites").iterdir()):
        if not entry.is_dir():
            continue
        if entry.name not in sites:
            raise ConfigError(
                f"{KEY}: sites/{entry.name}: no site with id {entry.name!r} is configured"
            )
        for inner in filter(_visible, entry.iterdir()):
            if inner.name not in KINDS:
                raise ConfigError(
                    f"{KEY}: sites/{entry.name}/{inner.name}: expected only "
                    f"{', '.join(KINDS)} in a site's folder"
                )


def _overrides_in(templates: TemplateSet, folder: Path, prefix: str, names: list[str]) -> set[str]:
    """Compile every file under ``folder``; the package template names it overrides."""
    if not folder.is_dir():
        return set()
    found: set[str] = set()
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_dir() or any(part.startswith(".") for part in relative.parts):
            continue
        name = relative.as_posix()
        if any(part.startswith("_") for part in relative.parts):
            _compile(templates.env, f"{prefix}/{name}")  # a partial: compiled, not rendered
        elif name in names:
            found.add(name)
        else:
            raise ConfigError(
                f"{KEY}: {prefix}/{name} is not a template Tidings renders "
                f"(those are: {', '.join(sorted(names))})"
            )
    return found


def _sample(kind: Kind, name: str) -> dict[str, Any]:
    """The variables ``name`` is rendered with: the brand's and its caller's."""
    stem = name.rpartition("/")[2].split(".", 1)[0]
    return {**_SAMPLE_BRAND.context(), **_SAMPLES.get((kind, stem), {})}


def _compile(env: Environment, name: str, sample: dict[str, Any] | None = None) -> Template:
    """Load ``name``; with ``sample`` (an operator's file), also render it once."""
    try:
        template = env.get_template(name)
        if sample is not None:
            template.render(**sample)
    except TemplateSyntaxError as exc:
        raise ConfigError(
            f"{KEY}: {exc.name or name} line {exc.lineno}: "
            f"{_one_line(exc.message or 'syntax error')}"
        ) from None
    except TemplateNotFound as exc:
        raise ConfigError(f"{KEY}: {name}: includes {exc.name!r}, which does not exist") from None
    except UndefinedError as exc:
        known = ", ".join(sorted(sample or {}))
        raise ConfigError(
            f"{KEY}: {name}: {_one_line(exc.message or 'undefined variable')} (it gets: {known})"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{KEY}: {name}: cannot be read ({type(exc).__name__})") from None
    except (TemplateError, ArithmeticError, LookupError, TypeError, ValueError) as exc:
        # A filter or test misused: what a delivery would hit, caught at start-up instead.
        raise ConfigError(f"{KEY}: {name}: {type(exc).__name__}: {_one_line(str(exc))}") from None
    return template
