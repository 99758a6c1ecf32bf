"""What can be known when a job is submitted, checked then and never after an hour of compute: the
dataset's recorded class counts against the job's split sizes and `k`, the zoo (its size, and
every model's weights present here), what each strategy needs of the job's top-K (`aft`: a teacher
other than the student) and a GFLOPs budget against the zoo's cheapest model (counted without
weights). No image is read; the service calls these at submission (`zooens.service.jobs.submit`),
`zooens.pipeline.fit` before its first unit.
"""

from __future__ import annotations

import dataclasses
import logging
import shlex

import torch.hub

from zooens.ensemble import get_strategy
from zooens.ensemble.specs import bit_hyperrule
from zooens.ensemble.strategies.auto import AUTO
from zooens.errors import ConfigError, DatasetError, MissingWeightsError, OfflineError
from zooens.pipeline.params import JobParams
from zooens.pipeline.splits import check_small_classes, drawn_split_sizes, no_train_split
from zooens.zoo import (
    DEFAULT_TAPS,
    WeightSet,
    get_weight_set,
    hub_cache_dir,
    hub_offline,
    model_facts,
    resolve_zoo,
)

__all__ = [
    "MAX_ZOO_MODELS",
    "SMALL_VAL_IMAGES",
    "check_budget",
    "check_counts",
    "check_job",
    "check_k",
    "check_split_sizes",
    "check_val_size",
    "check_zoo",
    "job_resolutions",
    "job_zoo",
    "least_gflops",
    "pullable",
    "small_val_warning",
    "weight_places",
    "zoo_text",
]

logger = logging.getLogger(__name__)
val_logger = logging.getLogger(__name__ + ".val_size")
"""The small-val warning's own logger (a child of this module's): it is about the trust one may put in the
results, not about sizes that do not fit, and can be silenced on its own."""

MAX_ZOO_MODELS = 256
"""Most models one job may rank: each is a unit of embedding work that holds the worker."""


def check_counts(name: str, counts: dict[str, dict[str, int]], params: JobParams) -> list[str]:
    """Refuse, from a dataset's per-split class counts alone, a dataset the job cannot run on; the warnings
    the checks logged (small classes, split sizes, a small val split, `k` above a class), for the job to
    record (`jobs.warnings`: its page and `zooens jobs show` show them)."""
    if "train" not in counts:
        raise no_train_split(name, counts)
    train = counts["train"]
    warnings = [check_small_classes(name, train, params)]
    if "val" not in counts and sum(train.values()) < 3:
        raise DatasetError(f"Dataset {name!r} has too few images to draw train and val from; add some.")
    warnings.append(check_split_sizes(name, train, has_val="val" in counts, params=params, val=counts.get("val")))
    warnings.append(check_val_size(name, counts, params))
    warnings.append(check_k(name, train, has_val="val" in counts, params=params))
    return [w for w in warnings if w]


def check_split_sizes(
    name: str, train: dict[str, int], *, has_val: bool, params: JobParams, val: dict[str, int] | None = None
) -> str | None:
    """`n_train`/`n_val` against the data, before the job exists.

    They apply only when train and val are drawn from the train split (no val split). When they
    ask for more images than the split holds, the job draws fewer, in proportion
    (`drawn_split_sizes`): with the default sizes that is the normal case for a small dataset,
    so it is a warning stating the sizes used; sizes the caller changed from the defaults are
    taken as asked for explicitly, and asking explicitly for more than exists is refused. With
    a val split, sizes changed from the defaults are not used, with a warning, and sizes beyond the
    dataset's own splits (`val`: the val split's class counts) are refused: they cannot be what was meant.
    """
    fields = JobParams.model_fields
    explicit = params.n_train != fields["n_train"].default or params.n_val != fields["n_val"].default
    if has_val:
        n_train_images = sum(int(v) for v in train.values())
        n_val_images = None if val is None else sum(int(v) for v in val.values())
        beyond = []
        if params.n_train != fields["n_train"].default and params.n_train > n_train_images:
            beyond.append(f"n_train={params.n_train} (its train split has {n_train_images} images)")
        if n_val_images is not None and params.n_val != fields["n_val"].default and params.n_val > n_val_images:
            beyond.append(f"n_val={params.n_val} (its val split has {n_val_images} images)")
        if beyond:
            raise ConfigError(
                f"Dataset {name!r} has a val split, so the job uses its train and val splits whole: "
                f"n_train/n_val only size the split drawn from train when there is no val split, and "
                f"{' and '.join(beyond)} asks for more than exists. Leave --n-train/--n-val out."
            )
        if explicit:
            return _warn(
                logger,
                f"dataset {name!r} has a val split: n_train={params.n_train} and n_val={params.n_val} are not used "
                "(they size the split drawn from train when there is no val split)",
            )
        return None
    n_available = sum(int(v) for v in train.values())
    wanted = params.n_train + params.n_val
    if wanted <= n_available:
        return None
    if explicit:
        raise ConfigError(
            f"n_train={params.n_train} + n_val={params.n_val} = {wanted} images, but dataset {name!r} has "
            f"{n_available} training images and no val split; lower --n-train/--n-val (their sum at most "
            f"{n_available}), or leave both at their defaults to draw in proportion."
        )
    n_train, n_val = drawn_split_sizes(n_available, params)
    return _warn(
        logger,
        f"dataset {name!r} has {n_available} training images and no val split: the job draws n_train={n_train} "
        f"and n_val={n_val} from them (the defaults {params.n_train} + {params.n_val} do not fit)",
    )


def _warn(to: logging.Logger, message: str) -> str:
    """Log `message` as a warning and return it (what the job records)."""
    to.warning("%s", message)
    return message


SMALL_VAL_IMAGES = 50
"""A val split with fewer images gets a warning: the ensemble's weights, its temperature and its val
metrics all rest on it, and on so few images they are noise (one image moves the accuracy by 2 %+)."""


def small_val_warning(n_val: int) -> str | None:
    """The warning a job records about a val split of `n_val` images, or None when it is large enough."""
    if n_val >= SMALL_VAL_IMAGES:
        return None
    return (
        f"The validation split has only {n_val} images (fewer than {SMALL_VAL_IMAGES}): the ensemble's "
        "selection, its temperature and its val metrics rest on them and are noisy; add validation images."
    )


def check_val_size(name: str, counts: dict[str, dict[str, int]], params: JobParams) -> str | None:
    """Log a warning at submission when the job's val split will be small (`small_val_warning`): the
    dataset's own val split, or the one drawn from train (`drawn_split_sizes`). The job records it too,
    with its ensemble."""
    if "val" in counts:
        n_val = sum(int(v) for v in counts["val"].values())
    else:
        n_val = drawn_split_sizes(sum(int(v) for v in counts.get("train", {}).values()), params)[1]
    message = small_val_warning(n_val)
    if message:
        val_logger.warning("dataset %r: %s", name, message)
    return message  # as the ensemble records it (`pipeline.stages.ensemble_warnings`): once on the job


def check_k(name: str, train: dict[str, int], *, has_val: bool, params: JobParams) -> str | None:
    """Refuse a `k` the job's training set cannot serve; warn when it outnumbers the smallest class.

    The leave-one-out score leaves the query out, so `k` must be smaller than the number of
    training examples (with more, every query votes over the whole set and the ranking is
    meaningless). A `k` above the smallest class is legal, as in any kNN, but that class can
    never win a vote by majority: logged as a warning, not refused, because class imbalance
    is the user's data. `k="auto"` is always fine: the ranking chooses it from the training set's
    class sizes (`selection.knn.auto_k`, below every class's majority reach and the training size).
    """
    if params.k == "auto":
        return None
    n_available = sum(int(v) for v in train.values())
    n_train = n_available if has_val else drawn_split_sizes(n_available, params)[0]
    if params.k >= n_train:
        raise ConfigError(
            f"k={params.k} neighbours but the job trains on {n_train} examples of dataset {name!r}; leave-one-out "
            f"kNN needs k < {n_train}: lower k (e.g. {max(1, min(10, n_train - 1))}) or add training images."
        )
    if not train:
        return None
    smallest_class, smallest = min(train.items(), key=lambda item: int(item[1]))
    expected = int(smallest) if has_val else int(smallest) * n_train // max(1, n_available)  # drawn at random
    if params.k > expected:
        about = "" if has_val else "about "
        return _warn(
            logger,
            f"k={params.k} is more than the {about}{expected} training examples of class {smallest_class!r}, the "
            f"smallest of dataset {name!r}: that class cannot win a kNN majority vote; lower k to at most "
            f"{max(1, expected)} for a fair ranking",
        )
    return None


def zoo_text(zoo: str | list[str]) -> str:
    """A zoo spec as the job stores it: the user's text, names joined by commas."""
    return zoo if isinstance(zoo, str) else ",".join(zoo)


def pullable(ws: WeightSet) -> bool:
    """The weights of `ws` (of its model, for a layer tap) can be fetched from the Hugging Face hub."""
    base = get_weight_set(ws.tap_of) if ws.tap_of else ws
    return base.source.kind == "hub" and bool(base.source.hub_id)


def check_zoo(zoo: str | list[str], weight_sets: list[WeightSet], *, pull: bool = False) -> None:
    """Refuse a zoo too large for one job, or naming models whose weights are not on this machine
    (the job would fail at the first of them, after queueing every other). With `pull`, weights
    the hub serves may be missing (the job's `pull` stage fetches them) unless this machine is
    offline (`HF_HUB_OFFLINE`); weights no hub serves still must be here. The message is short
    whatever the zoo's size: how many matched, how many lack weights, where zooens looks, how to add them."""
    if len(weight_sets) > MAX_ZOO_MODELS:
        models = len({ws.base_name for ws in weight_sets})
        taps = len(weight_sets) - sum(not ws.is_tap for ws in weight_sets)
        matched = f"{models} model{'s' if models > 1 else ''}"
        if taps:
            matched += f", {len(weight_sets)} entries with {taps} layer tap{'s' if taps > 1 else ''}"
        raise ConfigError(
            f"The zoo {zoo_text(zoo)!r} matched {matched}; a job ranks at most {MAX_ZOO_MODELS}. "
            "Narrow it: 'available' (models with weights here), a pattern such as 'convnext*', or a list of names"
            + (", or rank the models alone (--taps none)." if taps else ".")
        )
    missing = [ws for ws in weight_sets if not ws.weights_present]
    if not missing:
        return
    if pull:
        if hub_offline():
            raise OfflineError(
                f"The job asks to pull {len(missing)} model{'s' if len(missing) > 1 else ''} "
                f"({_names(missing)}) but this machine is offline (HF_HUB_OFFLINE is set). Pull them on a "
                "machine with network access (`zooens zoo pull NAME ...`), copy its HF_HOME folder here, and "
                "submit without --pull."
            )
        missing = [ws for ws in missing if not pullable(ws)]
        if not missing:
            return
    # counted in models: a layer tap has its model's weights
    n = len({ws.base_name for ws in weight_sets})
    n_missing = len({ws.base_name for ws in missing})
    if n_missing == n:
        which = "none has" if n > 1 else "it has no"
        head = f"The zoo {zoo_text(zoo)!r} matched {n} model{'s' if n > 1 else ''}; {which} weights on this machine"
    else:
        head = (
            f"The zoo {zoo_text(zoo)!r} matched {n} models; {n_missing} of them "
            f"{'has' if n_missing == 1 else 'have'} no weights on this machine ({_names(missing)})"
        )
    from_hub = [ws for ws in missing if pullable(ws)]
    if pull:
        head += " and the hub does not serve them"
    if from_hub:
        what = (
            shlex.quote(zoo_text(zoo)) if len({ws.base_name for ws in from_hub}) == n else _names(from_hub, quote=True)
        )
        how = (
            f'Fetch them with `zooens zoo pull {what}` (or let the job pull them: `--pull`, or `"pull": true` '
            "in the API), add a file with"
        )
    else:
        how = "Add a weights file with"
    raise MissingWeightsError(
        f"{head}. zooens looks in {weight_places(missing)}. {how} "
        "`zooens zoo add NAME --arch ARCH --weights FILE`, or use the zoo 'available' (models with weights here)."
    )


def _names(weight_sets: list[WeightSet], most: int = 3, *, quote: bool = False) -> str:
    names = [ws.base_name for ws in weight_sets]
    names = list(dict.fromkeys(names))
    if quote:
        return " ".join(shlex.quote(n) for n in names[:most]) + (" ..." if len(names) > most else "")
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")


def weight_places(weight_sets: list[WeightSet], most: int = 3) -> str:
    """Where zooens looks for these weight sets' files, summarised (not one path per model)."""
    places: list[str] = []
    for ws in weight_sets:
        source = ws.source
        if source.kind == "hub":
            if source.hub_id:
                places.append(f"the Hugging Face hub cache ({hub_cache_dir()})")
            if source.url:
                places.append(f"torch hub's checkpoints ({torch.hub.get_dir()}/checkpoints)")
        elif source.kind == "package":
            places.append(f"the Python package {source.package!r}")
        elif source.kind == "file":
            places.append(
                f"the file {source.path}"
                if len(weight_sets) == 1
                else "the files of the user zoo (`zooens zoo show NAME`)"
            )
        else:
            places.append("nowhere (no weights are named)")
    distinct = list(dict.fromkeys(places))
    shown = distinct[:most] + (["elsewhere"] if len(distinct) > most else [])
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def job_zoo(zoo: str | list[str], params: JobParams) -> tuple[list[WeightSet], list[str]]:
    """The weight sets a job over `zoo` ranks (`params.taps` added), checked by `check_zoo` and `check_job`,
    and the warnings `check_job` raised."""
    weight_sets = resolve_zoo(zoo, taps=DEFAULT_TAPS if params.taps == "auto" else 0)
    check_zoo(zoo, weight_sets, pull=params.pull)
    return weight_sets, check_job(params, weight_sets)


def check_job(params: JobParams, weight_sets: list[WeightSet]) -> list[str]:
    """Refuse a job that could never finish with this zoo, known before any unit runs: a strategy that the
    job's top-K cannot serve (`Strategy.check_job`: `aft` with one selected model has no teacher), a
    strategy that can fine-tune none of the zoo's entries (`check_strategies`), only joint strategies
    (`Strategy.joint`: `concat`) with one selected model (no run is planned), and an inference budget
    that not even the zoo's cheapest entry fits (`check_budget`). Returns the warnings to record on the
    job: a strategy that can fine-tune only some of the entries (the others get no run of it)."""
    for name in params.strategies:
        get_strategy(name).check_job(params.options_for(name), top_k=params.top_k, zoo_size=len(weight_sets))
    warnings = check_strategies(params, weight_sets)
    selected = min(params.top_k, len(weight_sets))
    if selected < 2 and all(get_strategy(name).joint for name in params.strategies):
        raise ConfigError(
            f"The job would train nothing: {', '.join(params.strategies)} "
            f"{'runs' if len(params.strategies) == 1 else 'run'} once over several selected models and is left "
            f"out with one (top_k {params.top_k}, a zoo of {len(weight_sets)}). Raise --top-k to 2 or more, or add "
            "a per-model strategy such as linear."
        )
    check_budget(params, weight_sets)
    return warnings


def check_strategies(params: JobParams, weight_sets: list[WeightSet]) -> list[str]:
    """Refuse a strategy that can fine-tune none of the zoo's entries (`Strategy.supports`: kron on a zoo
    without ViTs); a warning, logged and returned, for one that can fine-tune only some: the job plans it
    on those alone (`plan.plan_finetune_units`), so a selected entry it cannot adapt gets the job's other
    strategies' runs only. `auto` and joint strategies read every entry."""
    warnings: list[str] = []
    for name in params.strategies:
        strategy = get_strategy(name)
        if name == AUTO or strategy.joint:
            continue
        options = params.options_for(name)
        reasons = {ws.name: strategy.supports(ws.name, options) for ws in weight_sets}
        refused = [n for n, why in reasons.items() if why is not None]
        if not refused:
            continue
        first = reasons[refused[0]]
        if len(refused) == len(weight_sets):
            raise ConfigError(
                f"Strategy {name} can fine-tune none of the zoo's {len(weight_sets)} "
                f"{'entries' if len(weight_sets) > 1 else 'entry'}: {refused[0]}: {first}"
            )
        warnings.append(
            _warn(
                logger,
                f"Strategy {name} cannot fine-tune {len(refused)} of the zoo's {len(weight_sets)} entries "
                f"({', '.join(refused[:3])}{', ...' if len(refused) > 3 else ''}: {first}); those that the ranking "
                "selects get the job's other strategies only.",
            )
        )
    return warnings


def check_budget(params: JobParams, weight_sets: list[WeightSet]) -> None:
    """Refuse a `max_gflops` that no model of the zoo fits at the job's resolution.

    An ensemble has at least one member, and a member costs at least its model's forward pass, whose
    FLOPs are known before any weights are read: counted on the meta device at each resolution a run
    of the job may use (`job_resolutions`) by `zoo.model_facts`, the catalogue's own count (the shipped
    table where it has the model and size). The top-K is not known at submission, so the test is the
    whole zoo's cheapest model: a job whose top-K are all over budget still fails at its ensemble, with
    the costs of its runs. A layer tap counts as the network pruned after its stage (a tap of a model
    over budget may fit it). A model whose FLOPs cannot be counted without weights (an architecture
    that does not run on the meta device) might fit, so the check is then skipped.
    `max_latency_ms` is not checked here: latency is only known once measured on the worker's device.
    """
    if params.max_gflops is None or not weight_sets:
        return
    budget = params.max_gflops
    # the likely cheapest first (the shipped table, no counting), so that a budget that fits returns early
    order = sorted(weight_sets, key=lambda ws: model_facts(ws, count=False).gflops or 0.0)
    cheapest: tuple[str, float, tuple[int, int]] | None = None
    for ws in order:
        least = least_gflops(ws, params)
        if least is None:
            return
        gflops, size = least
        if gflops <= budget:
            return
        if cheapest is None or gflops < cheapest[1]:
            cheapest = (ws.name, gflops, size)
    assert cheapest is not None
    name, gflops, (h, w) = cheapest
    n = len(weight_sets)
    raise ConfigError(
        f"No model fits the inference budget max_gflops={budget:g}: the cheapest of the zoo's {n} "
        f"{'entries' if n > 1 else 'entry'}, {name}, costs {gflops:.4g} GFLOPs for one image at {h}x{w} px "
        f"(counted before any weights are read), and an ensemble has at least one member. Raise --max-gflops "
        f"to {gflops:.4g} or more, lower --resolution, or add smaller models to the zoo."
    )


def job_resolutions(ws: WeightSet, params: JobParams) -> list[tuple[int, int]]:
    """The (height, width) a run of the job on `ws` may be fed at: the job's `resolution`, else the
    model's own input size, and, when the job may run `full` (also through `auto`), the least resolution
    BiT's rule chooses (`ensemble.bit_hyperrule`: 128 px for small images and on CPUs)."""
    if params.resolution is not None:
        return [(params.resolution, params.resolution)]
    sizes = [(int(ws.input.input_size[1]), int(ws.input.input_size[2]))]
    if "full" in params.runnable_strategies:
        least = bit_hyperrule(1, (1, 1), "cpu").resolution
        sizes.append((least, least))
    return sizes


def least_gflops(ws: WeightSet, params: JobParams) -> tuple[float, tuple[int, int]] | None:
    """The least GFLOPs of one forward pass of `ws`'s embedder over `job_resolutions`, with that size;
    None when it cannot be counted without weights (`zoo.model_facts` gives none)."""
    counted = []
    for h, w in job_resolutions(ws, params):
        channels = int(ws.input.input_size[0])
        at = dataclasses.replace(ws, input=dataclasses.replace(ws.input, input_size=(channels, h, w)))
        gflops = model_facts(at).gflops
        if gflops is None:
            return None
        counted.append((gflops, (h, w)))
    return min(counted)
