"""The one error type for bad inputs, so every message names the node, the input and the expectation."""

from __future__ import annotations


class NodeInputError(ValueError):
    """A node (or core entry point) received an input it cannot use.

    Args:
        node: display name of the node or the core function (e.g. ``"AVLab LightCache"``).
        input_name: the input that is wrong (e.g. ``"cache_interval"``).
        expected: what would have been accepted.
        got: optional description of what arrived.
    """

    def __init__(self, node: str, input_name: str, expected: str, got: object = None):
        self.node, self.input_name, self.expected, self.got = node, input_name, expected, got
        msg = f"{node}: input '{input_name}' expected {expected}"
        if got is not None:
            msg += f", got {got}"
        super().__init__(msg)


def check(cond: bool, node: str, input_name: str, expected: str, got: object = None) -> None:
    """Raise :class:`NodeInputError` unless ``cond`` holds."""
    if not cond:
        raise NodeInputError(node, input_name, expected, got)


def check_fields(obj: object, node: str, checks: tuple[tuple[str, bool, str], ...]) -> None:
    """Validate a config object: ``checks`` are ``(field, ok, expected)``; the first failing one raises
    :class:`NodeInputError` naming the field and its value."""
    for name, ok, expected in checks:
        if not ok:
            raise NodeInputError(node, name, expected, getattr(obj, name))


def import_optional(package: str, module: str, node: str, input_name: str, what: str):
    """Import ``module`` of an optional dependency, or raise :class:`NodeInputError` saying which
    package to install (``pip install <package>``) for ``what``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise NodeInputError(node, input_name, f"the optional package '{package}' for {what} "
                             f"(pip install {package})", f"ImportError: {exc}") from None
