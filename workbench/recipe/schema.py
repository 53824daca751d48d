"""The recipe format: pydantic models of both recipe kinds.

This module is the public contract of DESIGN.md in code. It imports no
TensorFlow. Field validators check one field; the `model_validator`s check
fields against each other; paths are resolved against the recipe's folder
(and the data root for datasets) through the validation context, so that
everything after loading can trust the types and that the files exist.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from workbench.recipe import paths

# keras.applications constructors, by family of input preprocessing. Kept here
# as names (not imports) so that validating a recipe never imports Keras.
APPLICATIONS = (
    "ConvNeXtBase ConvNeXtLarge ConvNeXtSmall ConvNeXtTiny ConvNeXtXLarge "
    "DenseNet121 DenseNet169 DenseNet201 "
    "EfficientNetB0 EfficientNetB1 EfficientNetB2 EfficientNetB3 EfficientNetB4 "
    "EfficientNetB5 EfficientNetB6 EfficientNetB7 "
    "EfficientNetV2B0 EfficientNetV2B1 EfficientNetV2B2 EfficientNetV2B3 "
    "EfficientNetV2L EfficientNetV2M EfficientNetV2S "
    "InceptionResNetV2 InceptionV3 "
    "MobileNet MobileNetV2 MobileNetV3Large MobileNetV3Small "
    "NASNetLarge NASNetMobile "
    "ResNet101 ResNet101V2 ResNet152 ResNet152V2 ResNet50 ResNet50V2 "
    "VGG16 VGG19 Xception"
).split()
BUILTIN_BASES = ("conv4",)  # image bases; the mlp takes vectors
SYNTHETIC_GENERATORS = ("glyphs",)


def _yaml_number(value: Any) -> Any:
    """Accept `1e-3`, which YAML 1.1 reads as a string, as the float it means."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _fraction(value: float) -> float:
    if not 0 <= value < 1:
        raise ValueError(f"must be a fraction in [0, 1). Received: {value!r}")
    return value


Number = Annotated[float, BeforeValidator(_yaml_number)]
LearningRate = Annotated[float, BeforeValidator(_yaml_number), Field(gt=0, allow_inf_nan=False)]


def _selector(value: Any) -> Any:
    """Check a layer selector: all | none | {last: N} | {until: name} | {match: regex}."""
    if value in ("all", "none"):
        return value
    usage = "expected all, none, {last: N}, {until: layer_name} or {match: regex}"
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(f"{usage}. Received: {value!r}")
    ((key, arg),) = value.items()
    if key == "last":
        if isinstance(arg, bool) or not isinstance(arg, int) or arg < 0:
            raise ValueError(f"last needs a whole number >= 0. Received: last={arg!r}")
    elif key == "until":
        if not isinstance(arg, str) or not arg:
            raise ValueError(f"until needs a layer name. Received: until={arg!r}")
    elif key == "match":
        if not isinstance(arg, str):
            raise ValueError(f"match needs a regular expression. Received: match={arg!r}")
        _regex(arg, "match")
    else:
        raise ValueError(f"{usage}. Received: {value!r}")
    return value


Selector = Annotated[
    Any,
    BeforeValidator(_selector),
    Field(
        json_schema_extra={
            "anyOf": [
                {"enum": ["all", "none"]},
                {
                    "type": "object",
                    "properties": {"last": {"type": "integer", "minimum": 0}},
                    "required": ["last"],
                    "additionalProperties": False,
                },
                {"type": "object", "properties": {"until": {"type": "string"}}, "required": ["until"], "additionalProperties": False},
                {"type": "object", "properties": {"match": {"type": "string"}}, "required": ["match"], "additionalProperties": False},
            ]
        }
    ),
]


class Section(BaseModel):
    """A recipe section: unknown keys are errors, values are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=False)


def _image_size(value: list[int]) -> list[int]:
    if len(value) != 2 or min(value) < 8:
        raise ValueError(f"must be [height, width], each at least 8. Received: {value!r}")
    return value


ImageSize = Annotated[list[int], AfterValidator(_image_size)]


def _dataset_path(cls, value: str | None, info: ValidationInfo) -> str | None:
    return None if value is None else paths.resolve_data(value, info.context)


def _generator_name(cls, value: str | None, info: ValidationInfo) -> str | None:
    if info.data.get("source") == "synthetic" and value is not None and value not in SYNTHETIC_GENERATORS:
        raise ValueError(paths.unknown_name("synthetic generator", value, SYNTHETIC_GENERATORS))
    return value


def _check_source_fields(section) -> None:
    """The fields a data or task source needs: a folder its path, TFDS and synthetic a name."""
    if section.source == "folder" and section.path is None:
        raise ValueError("a folder source needs path: a directory or .zip with one sub-folder per class")
    if section.source in ("tfds", "synthetic") and section.name is None:
        raise ValueError(f"a {section.source} source needs name")


def _regex(value: str, field: str) -> str:
    try:
        re.compile(value)
    except re.error as error:
        raise ValueError(f"{field} is not a valid regular expression ({error}). Received: {field}={value!r}") from None
    return value


class Augment(Section):
    """Augmentation layers, active only in training (they live inside the model)."""

    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "none"
    rotation: Annotated[Number, Field(ge=0, le=1)] = 0.0
    zoom: Annotated[Number, Field(ge=0, lt=1)] = 0.0
    translation: Annotated[Number, Field(ge=0, lt=1)] = 0.0


class Splits(Section):
    """TFDS split strings."""

    train: str = "train"
    validation: str | None = None
    test: str | None = None


class Data(Section):
    """Where the images of a transfer recipe come from."""

    source: Literal["tfds", "folder", "synthetic"]
    name: str | None = None
    path: str | None = None
    data_dir: str | None = None
    splits: Splits = Splits()
    validation: Number = 0.2
    test: Number = 0.0
    per_class: Annotated[int, Field(ge=1)] | None = None
    include: str | None = None
    classes: Annotated[int, Field(ge=2)] = 10
    first_class: Annotated[int, Field(ge=0)] = 0
    samples: Annotated[int, Field(ge=2)] = 100
    image_size: ImageSize = [160, 160]
    channels: Literal[1, 3] = 3
    batch_size: Annotated[int, Field(ge=1)] = 32
    augment: Augment = Augment()

    @field_validator("validation", "test")
    @classmethod
    def _check_fraction(cls, value: float) -> float:
        return _fraction(value)

    @field_validator("include")
    @classmethod
    def _check_include(cls, value: str | None) -> str | None:
        return None if value is None else _regex(value, "include")

    _resolve_path = field_validator("path")(_dataset_path)
    _check_generator = field_validator("name")(_generator_name)

    @model_validator(mode="after")
    def _check_source(self) -> Data:
        _check_source_fields(self)
        if self.include is not None and self.source != "folder":
            raise ValueError(f"include selects class folders; it needs source: folder. Received: source={self.source}")
        if self.validation + self.test >= 1:
            raise ValueError(f"validation + test must leave examples to train on. Received: validation={self.validation}, test={self.test}")
        return self


class Base(Section):
    """The pretrained network the head goes on."""

    source: Literal["applications", "file", "run", "recipe", "hub", "builtin"]
    name: str | None = None
    weights: str = "imagenet"
    path: str | None = None
    layer: str | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        choices = {"applications": APPLICATIONS, "builtin": BUILTIN_BASES}.get(info.data.get("source"))
        if choices and value not in choices:
            raise ValueError(paths.unknown_name(f"{info.data['source']} base", value, choices))
        return value

    @field_validator("weights")
    @classmethod
    def _resolve_weights(cls, value: str, info: ValidationInfo) -> str:
        if value in ("imagenet", "none"):
            return value
        return paths.resolve_file(value, info.context, what="weights file")

    @field_validator("path")
    @classmethod
    def _resolve_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        source = info.data.get("source")
        if value is None or source not in ("file", "run", "recipe"):
            return value
        return paths.resolve_model_path(source, value, info.context)

    @model_validator(mode="after")
    def _check_source(self) -> Base:
        if self.source in ("applications", "builtin", "hub") and self.name is None:
            raise ValueError(f"an {self.source} base needs name")
        if self.source in ("file", "run", "recipe") and self.path is None:
            raise ValueError(f"a {self.source} base needs path")
        return self


class Freeze(Section):
    layers: Selector = "all"
    batchnorm: Literal["frozen", "train"] = "frozen"


class Head(Section):
    units: list[Annotated[int, Field(ge=1)]] = []
    activation: Literal["relu", "gelu", "swish", "tanh", "elu", "selu", "sigmoid", "linear"] = "relu"
    dropout: Annotated[Number, Field(ge=0, lt=1)] = 0.0
    classes: Annotated[int, Field(ge=2)] | None = None


class EarlyStopping(Section):
    monitor: str = "val_loss"
    patience: Annotated[int, Field(ge=0)] = 3
    min_delta: Annotated[Number, Field(ge=0)] = 0.0


class Phase(Section):
    """One compile + fit of the fine-tune schedule."""

    name: str
    epochs: Annotated[int, Field(ge=1)]
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    learning_rate: LearningRate = 1.0e-3
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_epochs: Annotated[Number, Field(ge=0)] = 0.0
    momentum: Annotated[Number, Field(ge=0, lt=1)] = 0.9
    weight_decay: Annotated[Number, Field(ge=0)] = 0.004
    unfreeze: Selector | None = None
    early_stopping: EarlyStopping | None = None
    monitor: str = "val_accuracy"

    @model_validator(mode="after")
    def _check_warmup(self) -> Phase:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs must be fewer than epochs. Received: warmup_epochs={self.warmup_epochs}, epochs={self.epochs}")
        return self


DEVICE_NAME = re.compile(r"^/?(?:device:)?(CPU|GPU):(\d+)$", re.IGNORECASE)


def _device_names(value: list[str]) -> list[str]:
    for name in value:
        if not DEVICE_NAME.match(name):
            raise ValueError(f"device names look like /gpu:0 or /cpu:1. Received: {name!r}")
    canonical = [DEVICE_NAME.match(name).expand(r"\1:\2").upper() for name in value]
    duplicates = sorted({name for name in canonical if canonical.count(name) > 1})
    if duplicates:
        raise ValueError(f"each device once; {duplicates[0]} is listed twice")
    return value


class Distribute(Section):
    """Where training runs: one device, the local devices (mirrored), or several machines (multi_worker)."""

    strategy: Literal["default", "mirrored", "multi_worker"] = "default"
    devices: Annotated[list[str], Field(min_length=1), AfterValidator(_device_names)] | None = None

    @model_validator(mode="after")
    def _check_devices(self) -> Distribute:
        if self.devices is not None and self.strategy != "mirrored":
            raise ValueError(
                f"devices chooses the local devices of strategy: mirrored; {self.strategy} takes none"
                + (" (each worker uses its local devices)" if self.strategy == "multi_worker" else "")
            )
        return self


class RecipeBase(Section):
    name: str | None = None
    seed: int = 1337
    jit_compile: Literal["auto"] | bool = "auto"  # XLA; auto: on GPUs, and on CPU for nets without convolutions
    distribute: Distribute = Distribute()

    @model_validator(mode="after")
    def _default_name(self, info: ValidationInfo) -> RecipeBase:
        if self.name is None:
            self.name = (info.context or {}).get("default_name", self.kind)
        return self


class TransferRecipe(RecipeBase):
    """Pretrained base + freezing + dense head + phased fine-tuning."""

    kind: Literal["transfer"]
    data: Data
    base: Base
    freeze: Freeze = Freeze()
    head: Head = Head()
    schedule: Annotated[list[Phase], Field(min_length=1)]
    baseline: Literal["none", "scratch"] = "none"

    @model_validator(mode="after")
    def _check_channels(self) -> TransferRecipe:
        if self.base.source in ("applications", "hub") and self.data.channels != 3:
            raise ValueError(f"{self.base.source} bases take RGB images; set data.channels: 3. Received: channels={self.data.channels}")
        return self


class Tasks(Section):
    """The distribution of few-shot tasks of a meta recipe."""

    source: Literal["sinusoid", "folder", "tfds", "synthetic"]
    name: str | None = None
    path: str | None = None
    data_dir: str | None = None
    split: str = "train"
    ways: Annotated[int, Field(ge=2)] = 5
    shots: Annotated[int, Field(ge=1)] = 1
    queries: Annotated[int, Field(ge=1)] = 15
    validation: Number | str = 0.1
    test: Number | str = 0.2
    classes: Annotated[int, Field(ge=2)] = 200
    samples: Annotated[int, Field(ge=2)] = 20
    image_size: ImageSize = [28, 28]
    channels: Literal[1, 3] = 1
    rotations: list[Literal[0, 90, 180, 270]] = [0]

    _resolve_path = field_validator("path")(_dataset_path)
    _check_generator = field_validator("name")(_generator_name)

    @field_validator("validation", "test", mode="before")
    @classmethod
    def _fraction_or_path(cls, value: Any, info: ValidationInfo) -> Any:
        value = _yaml_number(value)
        if isinstance(value, str):
            return paths.resolve_data(value, info.context)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _fraction(float(value))
        return value

    @model_validator(mode="after")
    def _check_source(self) -> Tasks:
        _check_source_fields(self)
        return self


class MetaModel(Section):
    """A built-in net, or base/freeze/head exactly as in a transfer recipe."""

    builtin: Literal["mlp", "conv4"] | None = None
    base: Base | None = None
    freeze: Freeze = Freeze()
    head: Head = Head()

    @model_validator(mode="after")
    def _one_kind(self) -> MetaModel:
        if (self.builtin is None) == (self.base is None):
            raise ValueError("give either builtin (mlp | conv4) or base (with optional freeze and head)")
        return self


DEFAULT_MULTI_STEP_ANNEAL = 5000  # outer iterations, as in MetaLearner


class Inner(Section):
    steps: Annotated[int, Field(ge=1)] = 1
    learning_rate: LearningRate = 0.4
    first_order: bool = False
    multi_step_loss: bool = False
    # Outer iterations over which the multi-step loss moves its weight from
    # uniform to the last step (MAML++); null keeps it uniform throughout.
    multi_step_anneal: Annotated[int, Field(ge=1)] | None = DEFAULT_MULTI_STEP_ANNEAL
    learn_rates: bool = False

    @model_validator(mode="after")
    def _anneal_needs_multi_step_loss(self) -> Inner:
        # Compared with the default, not looked up in the fields set: resolved
        # recipes (a run's recipe.yaml) spell out every default.
        if self.multi_step_anneal != DEFAULT_MULTI_STEP_ANNEAL and not self.multi_step_loss:
            raise ValueError("inner.multi_step_anneal applies only with inner.multi_step_loss: true")
        return self


class Outer(Section):
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    learning_rate: LearningRate = 1.0e-3
    lr_schedule: Literal["constant", "cosine"] = "constant"
    meta_batch_size: Annotated[int, Field(ge=1)] = 32
    iterations: Annotated[int, Field(ge=1)] = 60000


def _step_list(value: Any) -> Any:
    return [value] if isinstance(value, int) and not isinstance(value, bool) else value


class Evaluation(Section):
    tasks: Annotated[int, Field(ge=1)] = 600
    steps: Annotated[list[Annotated[int, Field(ge=0)]], BeforeValidator(_step_list), Field(min_length=1)] = [1]
    every: Annotated[int, Field(ge=1)] = 1000
    validation_tasks: Annotated[int, Field(ge=1)] = 100


class MetaRecipe(RecipeBase):
    """Meta-learning (MAML family, Reptile) over a distribution of few-shot tasks."""

    kind: Literal["meta"]
    algorithm: Literal["maml", "fomaml", "anil", "metasgd", "reptile", "pretrain"] = "maml"
    tasks: Tasks
    model: MetaModel
    inner: Inner = Inner()
    outer: Outer = Outer()
    evaluation: Evaluation = Evaluation()

    @model_validator(mode="after")
    def _check_model(self) -> MetaRecipe:
        regression = self.tasks.source == "sinusoid"
        if regression and self.model.builtin != "mlp":
            raise ValueError("sinusoid tasks need model: {builtin: mlp}")
        if not regression and self.model.builtin == "mlp":
            raise ValueError("image tasks need a convolutional model: builtin: conv4, or a base")
        if self.algorithm == "pretrain" and not regression:
            raise ValueError(
                "algorithm pretrain (joint training, then fine-tuning) needs regression tasks; for images, use a transfer recipe as the baseline"
            )
        replicas = len(self.distribute.devices or [])
        if replicas and self.outer.meta_batch_size % replicas:
            raise ValueError(
                f"outer.meta_batch_size ({self.outer.meta_batch_size}) must split evenly over the {replicas} devices of distribute.devices"
            )
        if self.algorithm in ("reptile", "metasgd") and (self.inner.multi_step_loss or self.inner.learn_rates):
            raise ValueError(f"inner.multi_step_loss and inner.learn_rates are MAML++ options; they do not apply to {self.algorithm}")
        return self


Recipe = Annotated[TransferRecipe | MetaRecipe, Field(discriminator="kind")]
RECIPE_KINDS = {"transfer": TransferRecipe, "meta": MetaRecipe}
