"""The recipe format: pydantic models of both recipe kinds.

Each rule of the format is written here once. Sections whose fields depend on
a `source` are discriminated unions, one model per source, so a field that a
source does not read is refused as unknown, never ignored. Every field has a
description (the JSON Schema gives editors tooltips from it) and its default
beside it. Field validators check one field; the `model_validator`s check
fields against each other; paths are resolved against the recipe's folder
(and the data root for datasets) through the validation context, so that
everything after loading can trust the types and that the files exist. This
module imports no TensorFlow.
"""

from __future__ import annotations

import re
import typing
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError, ValidationError

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
# What Keras logs in a transfer phase: the compiled loss and accuracy, and
# their `val_` twins when the data has a validation split.
MONITORS = ("loss", "accuracy", "val_loss", "val_accuracy")
DEFAULT_MULTI_STEP_ANNEAL = 5000


def _yaml_number(value: Any) -> Any:
    """Accept `1e-3`, which YAML 1.1 reads as a string, as the float it means."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _number(**bounds: float) -> Any:
    """A finite float with bounds that the JSON Schema spells `minimum`, `exclusiveMaximum`, ...

    The bounds sit on the float itself, inside the YAML-spelling validator, so
    that pydantic writes them as standard JSON Schema keywords.
    """
    return Annotated[float, Field(allow_inf_nan=False, **bounds), BeforeValidator(_yaml_number)]


Fraction = _number(ge=0, lt=1)
LearningRate = _number(gt=0)
Count = Annotated[int, Field(ge=1)]
ImageSize = Annotated[
    list[Annotated[int, Field(ge=8)]],
    Field(min_length=2, max_length=2, description="[height, width] the images are resized to, each at least 8."),
]
Channels = Annotated[Literal[1, 3], Field(description="1 for grayscale, 3 for RGB; images are converted as needed.")]
Optimizer = Literal["adam", "adamw", "sgd", "rmsprop"]
LrSchedule = Literal["constant", "cosine"]


def _regex(value: str, field: str) -> str:
    try:
        re.compile(value)
    except re.error as error:
        raise ValueError(f"{field} is not a valid regular expression ({error}). Received: {field}={value!r}") from None
    return value


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


def _selector_form(key: str, schema: dict, description: str) -> dict:
    return {"type": "object", "properties": {key: {**schema, "description": description}}, "required": [key], "additionalProperties": False}


Selector = Annotated[
    Any,
    BeforeValidator(_selector),
    WithJsonSchema(
        {
            "anyOf": [
                {"enum": ["all", "none"]},
                _selector_form("last", {"type": "integer", "minimum": 0}, "The last N selectable layers of the base."),
                _selector_form("until", {"type": "string", "minLength": 1}, "Every layer after the one with this name."),
                _selector_form("match", {"type": "string"}, "The layers whose name matches this regular expression."),
            ]
        }
    ),
]


def _monitor(value: Any) -> Any:
    if isinstance(value, str) and value not in MONITORS:
        raise ValueError(paths.unknown_name("monitor", value, MONITORS))
    return value


Monitor = Annotated[Literal[MONITORS], BeforeValidator(_monitor)]


def _named(what: str, choices: tuple[str, ...] | list[str]) -> Any:
    """A name out of `choices`, refused with the nearest ones; the JSON Schema lists them all."""

    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(paths.unknown_name(what, value, choices))
        return value

    return Annotated[str, AfterValidator(check), WithJsonSchema({"type": "string", "enum": list(choices)})]


def _dataset_path(value: str, info: ValidationInfo) -> str:
    return paths.resolve_data(value, info.context)


DatasetPath = Annotated[str, AfterValidator(_dataset_path)]


def _class_pattern(value: str) -> str:
    return _regex(value, "include")


ClassPattern = Annotated[str, AfterValidator(_class_pattern)]


def _field_error(loc: tuple[str | int, ...], message: str, received: Any) -> ValidationError:
    """A validation error at `loc` below the model being validated, for checks across fields that blame one of them."""
    return ValidationError.from_exception_data(
        "recipe", [{"type": PydanticCustomError("value_error", message), "loc": loc, "input": received}]
    )


class Section(BaseModel):
    """A recipe section: unknown keys are errors, values are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=False)


# ---------------------------------------------------------------- transfer data


class Augment(Section):
    """Augmentation layers, active only in training (they live inside the model)."""

    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = Field("none", description="Random flips.")
    rotation: _number(ge=0, le=1) = Field(0.0, description="Largest random rotation, as a fraction of a full turn.")
    zoom: _number(ge=0, lt=1) = Field(0.0, description="Largest random zoom in or out, as a fraction of the image size.")
    translation: _number(ge=0, lt=1) = Field(0.0, description="Largest random shift, as a fraction of the image size.")


class Splits(Section):
    """TFDS split strings."""

    train: str = Field("train", description='The TFDS split to train on, e.g. "train[:80%]".')
    validation: str | None = Field(None, description="The TFDS split to validate on after each epoch; none: no validation.")
    test: str | None = Field(None, description="The TFDS split to test the final model on; none: no test.")


class ImageData(Section):
    """What every image source of a transfer recipe shares."""

    source: str = Field(description="Where the images come from.")
    image_size: ImageSize = Field([160, 160])
    channels: Channels = Field(3)
    batch_size: Count = Field(32, description="Examples per training step.")
    augment: Augment = Field(Augment(), description="Augmentation layers, active only in training.")


class TfdsData(ImageData):
    """A TensorFlow Datasets image classification dataset, split by TFDS split strings."""

    source: Literal["tfds"] = Field(description="A TensorFlow Datasets dataset.")
    name: str = Field(description="The TFDS dataset name, e.g. tf_flowers.")
    data_dir: str | None = Field(None, description="Where TFDS keeps its data; none: the TFDS default.")
    splits: Splits = Field(Splits(), description="Which TFDS splits train, validate and test.")


class HeldOutData(ImageData):
    """An in-memory source, split per class into train, validation and test."""

    validation: Fraction = Field(0.2, description="Fraction of each class held out for validation.")
    test: Fraction = Field(0.0, description="Fraction of each class held out for the final test.")
    per_class: Count | None = Field(None, description="Training examples kept per class (few-shot); none: all that remain.")
    rotations: list[Literal[0, 90, 180, 270]] = Field(
        [0], description="Each rotation of a class is a new class, e.g. [0, 90, 180, 270]; an image and its rotations share a split."
    )
    style: Literal["plain", "textured"] = Field(
        "plain",
        description="textured: each grayscale image's strokes blended onto a random colour texture (the MNIST-M construction); channels: 3.",
    )

    @model_validator(mode="after")
    def _check_fractions(self) -> HeldOutData:
        if self.validation + self.test >= 1:
            raise ValueError(f"validation + test must leave examples to train on. Received: validation={self.validation}, test={self.test}")
        return self

    @model_validator(mode="after")
    def _check_style(self) -> HeldOutData:
        if self.style == "textured" and self.channels != 3:
            raise ValueError(f"style textured draws colour images: set channels: 3. Received: channels={self.channels}")
        return self


class FolderData(HeldOutData):
    """A directory or .zip archive with one sub-folder of images per class."""

    source: Literal["folder"] = Field(description="A directory or .zip archive, one sub-folder per class.")
    path: DatasetPath = Field(
        description="The directory or .zip; relative paths are looked up beside the recipe, then under the data root."
    )
    include: ClassPattern | None = Field(None, description="Keep only the classes whose folder path matches this regular expression.")


class SyntheticData(HeldOutData):
    """Images drawn by a generator, deterministic from the seed: no files needed."""

    source: Literal["synthetic"] = Field(description="Images drawn by a generator from the seed.")
    name: _named("synthetic generator", SYNTHETIC_GENERATORS) = Field(description="The generator, e.g. glyphs.")
    classes: Annotated[int, Field(ge=2)] = Field(10, description="Number of classes drawn.")
    first_class: Annotated[int, Field(ge=0)] = Field(0, description="Index of the first class drawn (other indices give other classes).")
    samples: Annotated[int, Field(ge=2)] = Field(100, description="Examples drawn per class, before the split.")


DataSection = Annotated[TfdsData | FolderData | SyntheticData, Field(discriminator="source")]


# ---------------------------------------------------------------- bases


class BaseNetwork(Section):
    """What every base shares."""

    source: str = Field(description="Where the base network comes from.")


class CutBase(BaseNetwork):
    """A base that can be cut at one of its layers."""

    layer: str | None = Field(None, description="Cut the base at this layer's output; none: use all of it.")


class ApplicationsBase(CutBase):
    """A keras.applications network, without its top."""

    source: Literal["applications"] = Field(description="A keras.applications network.")
    name: _named("applications base", APPLICATIONS) = Field(description="The keras.applications constructor, e.g. MobileNetV2.")
    weights: str = Field("imagenet", description="imagenet (Keras downloads them once), none (random), or a path to a weights file.")

    @field_validator("weights")
    @classmethod
    def _resolve_weights(cls, value: str, info: ValidationInfo) -> str:
        if value in ("imagenet", "none"):
            return value
        return paths.resolve_file(value, info.context, what="weights file")


class BuiltinBase(CutBase):
    """One of the workbench's own small networks, from random weights."""

    source: Literal["builtin"] = Field(description="A network of the workbench, from random weights.")
    name: _named("builtin base", BUILTIN_BASES) = Field(description="The network, e.g. conv4.")
    weights: Literal["none"] = Field("none", description="Always none: a built-in base starts from random weights.")


class HubBase(BaseNetwork):
    """A KerasHub backbone preset (needs keras-hub)."""

    source: Literal["hub"] = Field(description="A KerasHub backbone preset.")
    name: str = Field(description="The KerasHub preset, e.g. resnet_18_imagenet.")


class FileBase(CutBase):
    """A saved `.keras` model; its own backbone if it has one."""

    source: Literal["file"] = Field(description="A saved .keras model.")
    path: str = Field(description="The .keras file, relative to the recipe's folder.")

    @field_validator("path")
    @classmethod
    def _resolve_path(cls, value: str, info: ValidationInfo) -> str:
        return paths.resolve_model_path("file", value, info.context)


class RunBase(CutBase):
    """The model of a finished run."""

    source: Literal["run"] = Field(description="The model of a finished run directory.")
    path: str = Field(description="The run directory, relative to the recipe's folder.")

    @field_validator("path")
    @classmethod
    def _resolve_path(cls, value: str, info: ValidationInfo) -> str:
        return paths.resolve_model_path("run", value, info.context)


class RecipeBase(CutBase):
    """The model that another recipe trains: its run is reused when one has finished, else run first."""

    source: Literal["recipe"] = Field(description="The model another recipe trains.")
    path: str = Field(description="The recipe file, relative to this recipe's folder.")

    @field_validator("path")
    @classmethod
    def _resolve_path(cls, value: str, info: ValidationInfo) -> str:
        return paths.resolve_model_path("recipe", value, info.context)


BaseSection = Annotated[
    ApplicationsBase | FileBase | RunBase | RecipeBase | HubBase | BuiltinBase,
    Field(discriminator="source"),
]


def _check_rgb(base: BaseNetwork, channels: int, field: str) -> None:
    if base.source in ("applications", "hub") and channels != 3:
        raise ValueError(f"{base.source} bases take RGB images; set {field}: 3. Received: channels={channels}")


class Freeze(Section):
    """Which base layers train, and how its BatchNorm layers behave."""

    layers: Selector = Field("all", description="Base layers frozen: all | none | {last: N} | {until: layer} | {match: regex}.")
    batchnorm: Literal["frozen", "train"] = Field(
        "frozen", description="frozen: inference mode, statistics never change; train: BatchNorm of unfrozen layers trains."
    )


class DenseHead(Section):
    """Hidden Dense layers between the base and the output layer."""

    units: list[Count] = Field([], description="Units of each hidden Dense layer, in order; []: the output layer alone.")
    activation: Literal["relu", "gelu", "swish", "tanh", "elu", "selu", "sigmoid", "linear"] = Field(
        "relu", description="Activation of the hidden layers."
    )


class ClassifierHead(DenseHead):
    """The classifier a transfer recipe puts on its base."""

    dropout: Fraction = Field(0.0, description="Dropout rate after each hidden layer (or after the base when there is none).")
    classes: Annotated[int, Field(ge=2)] | None = Field(None, description="Output classes; none: the number of classes in the data.")


HEAD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
HEAD_METRICS = ("accuracy", "top5_accuracy")


def _head_name(value: str) -> str:
    if not HEAD_NAME.match(value):
        raise ValueError(
            f"a head name starts with a letter and holds letters, digits and _ only (it names the model's output). Received: {value!r}"
        )
    return value


class LabelsFile(Section):
    """Labels read from a CSV file of `class,label` rows: each class folder of the data gets one label."""

    file: str = Field(description="The CSV file (a header row class,label), relative to the recipe's folder.")

    @field_validator("file")
    @classmethod
    def _resolve(cls, value: str, info: ValidationInfo) -> str:
        return paths.resolve_file(value, info.context, "labels file")


class NamedHead(DenseHead):
    """One output of a multi-task model: its labels, its dense layers and its weight in the loss."""

    name: Annotated[str, AfterValidator(_head_name)] = Field(description="Names the output, its figures and its predictions.")
    labels: Literal["class", "group"] | LabelsFile = Field(
        "class", description="class: the class folder; group: its parent folder (e.g. the Omniglot alphabet); or {file: labels.csv}."
    )
    dropout: Fraction = Field(0.0, description="Dropout rate after each hidden layer (or after the base when there is none).")
    loss_weight: _number(ge=0) = Field(1.0, description="The weight of this head's loss in the total loss.")
    metrics: Annotated[list[Literal[HEAD_METRICS]], Field(min_length=1)] = Field(
        ["accuracy"], description="What is reported for this head: accuracy, top5_accuracy."
    )


class DomainAdaptation(Section):
    """A target domain (same labels, another input distribution) that training adapts to; its labels only score."""

    method: Literal["dann", "none"] = Field(
        description="dann: a domain classifier behind a gradient-reversal layer (Ganin & Lempitsky 2015); none: source only, the baseline."
    )
    target: DataSection = Field(
        description="The target images, split like data: train unlabelled for adaptation, test (labelled) to score. "
        "image_size, channels, batch_size and augment are the source's."
    )
    weight: _number(gt=0) = Field(1.0, description="The reversal weight that the schedule 2/(1+exp(-10 p)) - 1 rises to over training.")
    units: list[Count] = Field([100], description="Units of the domain classifier's hidden layers.")

    @model_validator(mode="after")
    def _target_needs_test_images(self) -> DomainAdaptation:
        if self.target.source != "tfds" and not self.target.test:
            raise _field_error(
                ("target", "test"), "the target's test split scores adaptation: give a fraction > 0, e.g. 0.2", self.target.test
            )
        return self


class EarlyStopping(Section):
    """Stop a phase when its monitor stops improving."""

    monitor: Monitor = Field("val_loss", description="The logged value watched: loss, accuracy, val_loss or val_accuracy.")
    patience: Annotated[int, Field(ge=0)] = Field(3, description="Epochs without improvement before the phase stops.")
    min_delta: _number(ge=0) = Field(0.0, description="Smallest change that counts as an improvement.")


class LearnedOptimizerRun(Section):
    """The learned optimizer that a finished `algorithm: learned_optimizer` run trained."""

    learned: str = Field(description="The run directory, relative to the recipe's folder.")

    @field_validator("learned")
    @classmethod
    def _resolve_run(cls, value: str, info: ValidationInfo) -> str:
        return paths.resolve_model_path("run", value, info.context)


PHASE_OPTIMIZERS = "expected adam | adamw | sgd | rmsprop, or {learned: RUN} (a learned_optimizer run directory)"


def _known_optimizer(value: Any) -> Any:
    if isinstance(value, str) and value not in typing.get_args(Optimizer):
        raise ValueError(
            f"{paths.unknown_name('optimizer', value, typing.get_args(Optimizer))}; or {{learned: RUN}} for a learned optimizer"
        )
    return value


def _optimizer_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "name"
    return "learned" if isinstance(value, dict | LearnedOptimizerRun) else None


PhaseOptimizer = Annotated[
    Annotated[Annotated[Optimizer, BeforeValidator(_known_optimizer)], Tag("name")] | Annotated[LearnedOptimizerRun, Tag("learned")],
    Discriminator(_optimizer_kind, custom_error_type="optimizer_kind", custom_error_message=PHASE_OPTIMIZERS),
]


class Phase(Section):
    """One compile + fit of the fine-tune schedule."""

    name: str | None = Field(None, description="Names the phase in logs and histories; default: phase-1, phase-2, ... by position.")
    epochs: Count = Field(description="Epochs of this phase.")
    optimizer: PhaseOptimizer = Field(
        "adam", description="The optimizer, compiled anew for the phase: adam | adamw | sgd | rmsprop, or {learned: RUN}."
    )
    learning_rate: LearningRate = Field(1.0e-3, description="Peak learning rate.")
    lr_schedule: LrSchedule = Field("constant", description="constant, or cosine decay over the phase.")
    warmup_epochs: _number(ge=0) = Field(0.0, description="Epochs of linear warm-up to the learning rate; fewer than epochs.")
    momentum: _number(ge=0, lt=1) = Field(0.9, description="Momentum of sgd.")
    weight_decay: _number(ge=0) = Field(0.004, description="Decoupled weight decay of adamw.")
    unfreeze: Selector | None = Field(None, description="Base layers made trainable from this phase on; same selectors as freeze.layers.")
    early_stopping: EarlyStopping | None = Field(None, description="Stop the phase early; none: train every epoch.")
    monitor: Monitor = Field("val_accuracy", description="The phase keeps the weights of its best epoch by this logged value.")

    @model_validator(mode="after")
    def _check_warmup(self) -> Phase:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs must be fewer than epochs. Received: warmup_epochs={self.warmup_epochs}, epochs={self.epochs}")
        return self

    @model_validator(mode="after")
    def _learned_optimizer_has_no_rate(self) -> Phase:
        # Compared with the defaults, not looked up in the fields set: resolved recipes spell out every default.
        if isinstance(self.optimizer, LearnedOptimizerRun):
            changed = [
                name
                for name in ("learning_rate", "lr_schedule", "warmup_epochs")
                if getattr(self, name) != Phase.model_fields[name].default
            ]
            if changed:
                raise _field_error(
                    (changed[0],), f"a learned optimizer takes the steps it learned; leave {changed[0]} out", getattr(self, changed[0])
                )
        return self


# ---------------------------------------------------------------- both kinds

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

    strategy: Literal["default", "mirrored", "multi_worker"] = Field(
        "default", description="default: one device; mirrored: the local devices; multi_worker: several machines (TF_CONFIG)."
    )
    devices: Annotated[list[str], Field(min_length=1), AfterValidator(_device_names)] | None = Field(
        None, description="mirrored only: the local devices, e.g. [/gpu:0, /gpu:1]; none: all of them."
    )

    @model_validator(mode="after")
    def _check_devices(self) -> Distribute:
        if self.devices is not None and self.strategy != "mirrored":
            raise ValueError(
                f"devices chooses the local devices of strategy: mirrored; {self.strategy} takes none"
                + (" (each worker uses its local devices)" if self.strategy == "multi_worker" else "")
            )
        return self


class RecipeIdentity(Section):
    """The fields of every recipe kind."""

    name: str | None = Field(None, description="Names the run; default: the recipe's file name.")
    seed: int = Field(1337, description="Seeds every random choice: runs are deterministic for a given seed.")

    @model_validator(mode="after")
    def _default_name(self, info: ValidationInfo) -> RecipeIdentity:
        if self.name is None:
            self.name = (info.context or {}).get("default_name", self.kind)
        return self


class RecipeFields(RecipeIdentity):
    """The fields of both training recipe kinds."""

    jit_compile: Literal["auto"] | bool = Field("auto", description="XLA; auto: on GPUs, and on CPU for nets without convolutions.")
    distribute: Distribute = Field(Distribute(), description="Where training runs.")
    precision: Literal["float32", "mixed_bfloat16", "mixed_float16"] = Field(
        "float32",
        description="Compute dtype of training; mixed_*: layers compute in bfloat16 or float16, variables and outputs stay float32.",
    )


class TransferRecipe(RecipeFields):
    """Pretrained base + freezing + dense head + phased fine-tuning."""

    kind: Literal["transfer"] = Field(description="transfer: fine-tune a pretrained base with a new head.")
    data: DataSection = Field(description="Where the images come from: source tfds | folder | synthetic.")
    base: BaseSection = Field(description="The pretrained network: source applications | file | run | recipe | hub | builtin.")
    freeze: Freeze = Field(Freeze(), description="Which base layers are frozen at the start.")
    head: ClassifierHead | None = Field(None, description="The new classifier on the base; default: one softmax layer.")
    heads: Annotated[list[NamedHead], Field(min_length=1)] | None = Field(
        None, description="Several named outputs on the base, trained together, instead of head."
    )
    domain_adaptation: DomainAdaptation | None = Field(None, description="Adapt to a target domain; none: train on data alone.")
    schedule: Annotated[list[Phase], Field(min_length=1)] = Field(description="Phases run in order, each its own compile + fit.")
    baseline: Literal["none", "scratch"] = Field(
        "none", description="scratch: also train the same network from random weights, to compare."
    )

    @model_validator(mode="after")
    def _check_channels(self) -> TransferRecipe:
        _check_rgb(self.base, self.data.channels, "data.channels")
        return self

    @model_validator(mode="after")
    def _one_kind_of_head(self) -> TransferRecipe:
        if self.heads is None:
            self.head = self.head or ClassifierHead()
            return self
        if self.head is not None:
            raise _field_error(("heads",), "give head (one output) or heads (several), not both", [head.name for head in self.heads])
        names = [head.name for head in self.heads]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise _field_error(("heads",), f"each head name once; {repeated[0]!r} is given twice", names)
        if self.domain_adaptation is not None:
            raise _field_error(
                ("domain_adaptation",), "domain adaptation trains one head: use head, not heads", self.domain_adaptation.method
            )
        if self.baseline != "none":
            raise _field_error(("baseline",), "the scratch baseline trains one head: use head, not heads", self.baseline)
        return self

    @model_validator(mode="after")
    def _target_like_source(self) -> TransferRecipe:
        """The target's images go through the source's model and batches: whatever it leaves unset is the source's."""
        if self.domain_adaptation is None:
            return self
        target = self.domain_adaptation.target
        for field in ("image_size", "channels", "batch_size", "augment"):
            mine, theirs = getattr(self.data, field), getattr(target, field)
            if field not in target.model_fields_set:
                setattr(target, field, mine)
            elif theirs != mine:
                shown = theirs.model_dump() if hasattr(theirs, "model_dump") else theirs
                raise _field_error(("domain_adaptation", "target", field), f"must be the source's ({field} of data), or left out", shown)
        if getattr(target, "style", "plain") == "textured" and target.channels != 3:
            raise _field_error(
                ("domain_adaptation", "target", "style"),
                "style textured draws colour images: the source data needs channels: 3",
                target.style,
            )
        return self

    @model_validator(mode="after")
    def _default_phase_names(self) -> TransferRecipe:
        for position, phase in enumerate(self.schedule, start=1):
            if phase.name is None:
                phase.name = f"phase-{position}"
        return self


# ---------------------------------------------------------------- meta tasks


class TaskShape(Section):
    """What every task source shares: examples per task."""

    source: str = Field(description="Where the tasks come from.")
    shots: Count = Field(1, description="Support (training) examples per class, or per task for regression.")
    queries: Count = Field(15, description="Query (evaluation) examples per class, or per task for regression.")


class SinusoidTaskSource(TaskShape):
    """Regression of sinusoids of random amplitude and phase (Finn et al. 2017)."""

    source: Literal["sinusoid"] = Field(description="Sinusoid regression tasks.")


META_VALIDATION, META_TEST = 0.1, 0.2  # fractions of the classes; folder sources may name other folders instead


class EpisodeImages(TaskShape):
    """N-way classification tasks of images: what meta-learning and compare tasks share."""

    ways: Annotated[int, Field(ge=2)] = Field(5, description="Classes per task.")
    image_size: ImageSize = Field([28, 28])
    channels: Channels = Field(1)
    rotations: list[Literal[0, 90, 180, 270]] = Field([0], description="Each rotation of a class is a new class, e.g. [0, 90, 180, 270].")


class ImageTaskSource(EpisodeImages):
    """N-way classification tasks from the classes of an image source."""

    validation: Fraction = Field(META_VALIDATION, description="Fraction of the classes kept for meta-validation.")
    test: Fraction = Field(META_TEST, description="Fraction of the classes kept for meta-testing.")


class FolderTaskSource(ImageTaskSource):
    """Classes of a directory or .zip archive; nested class folders (alphabet/character) allowed."""

    source: Literal["folder"] = Field(description="A directory or .zip archive of class folders.")
    path: DatasetPath = Field(
        description="The directory or .zip; relative paths are looked up beside the recipe, then under the data root."
    )
    validation: Fraction | str = Field(
        META_VALIDATION, description="Meta-validation classes: a fraction of path's classes, or another directory or .zip."
    )
    test: Fraction | str = Field(META_TEST, description="Meta-test classes: a fraction of path's classes, or another directory or .zip.")

    @field_validator("validation", "test", mode="before")
    @classmethod
    def _resolve_other_folder(cls, value: Any, info: ValidationInfo) -> Any:
        value = _yaml_number(value)
        return paths.resolve_data(value, info.context) if isinstance(value, str) else value


class TfdsTaskSource(ImageTaskSource):
    """Classes of a TensorFlow Datasets dataset."""

    source: Literal["tfds"] = Field(description="A TensorFlow Datasets dataset.")
    name: str = Field(description="The TFDS dataset name, e.g. omniglot.")
    split: str = Field("train", description="The TFDS split whose classes are used.")
    data_dir: str | None = Field(None, description="Where TFDS keeps its data; none: the TFDS default.")


class SyntheticTaskSource(ImageTaskSource):
    """Classes drawn by a generator, deterministic from the seed."""

    source: Literal["synthetic"] = Field(description="Classes drawn by a generator from the seed.")
    name: _named("synthetic generator", SYNTHETIC_GENERATORS) = Field(description="The generator, e.g. glyphs.")
    classes: Annotated[int, Field(ge=2)] = Field(200, description="Number of classes drawn, before the split.")
    samples: Annotated[int, Field(ge=2)] = Field(20, description="Examples drawn per class.")


TasksSection = Annotated[SinusoidTaskSource | FolderTaskSource | TfdsTaskSource | SyntheticTaskSource, Field(discriminator="source")]


# ---------------------------------------------------------------- meta model


class BuiltinNet(Section):
    """A network of the workbench, from random weights."""

    builtin: Literal["mlp", "conv4"] = Field(description="mlp (1-40-40-1, regression) or conv4 (four conv blocks, images).")
    filters: Count | None = Field(
        None,
        description="conv4: filters of every convolution; default 64, as MAML on Omniglot (MAML and Ravi & Larochelle use 32 on miniImageNet).",
    )

    @model_validator(mode="after")
    def _filters_only_for_conv4(self) -> BuiltinNet:
        if self.builtin == "mlp" and self.filters is not None:
            raise ValueError("model.filters sets conv4's convolutions; the mlp has none")
        return self

    @model_serializer(mode="wrap")
    def _filters_when_set(self, serialize):
        # A resolved recipe leaves out filters it was not given: `{builtin: mlp}` stays as written.
        data = serialize(self)
        if self.filters is None:
            data.pop("filters", None)
        return data

    @property
    def base(self) -> None:
        """None: a built-in net has no base, so `model.base` reads the same on both model kinds."""
        return None


class PretrainedNet(Section):
    """A base with a dense head, as in a transfer recipe; the head's output layer has one unit per way."""

    base: BaseSection = Field(description="The pretrained network: source applications | file | run | recipe | hub | builtin.")
    freeze: Freeze = Field(Freeze(), description="Which base layers are frozen.")
    head: DenseHead = Field(DenseHead(), description="Hidden Dense layers before the output layer.")

    @property
    def builtin(self) -> None:
        """None: a pretrained base is no built-in net, so `model.builtin` reads the same on both model kinds."""
        return None


MODEL_KINDS = "give either builtin (mlp | conv4) or base (with optional freeze and head), not both"


def _model_kind(value: Any) -> str | None:
    if isinstance(value, BuiltinNet | PretrainedNet):
        return "builtin net" if isinstance(value, BuiltinNet) else "pretrained base"
    if isinstance(value, dict):
        # `base: null` names no base: resolved recipes of older runs spell it out beside `builtin`.
        builtin, base = value.get("builtin") is not None, value.get("base") is not None
        if builtin != base:
            return "builtin net" if builtin else "pretrained base"
    return None


MetaModel = Annotated[
    Annotated[BuiltinNet, Tag("builtin net")] | Annotated[PretrainedNet, Tag("pretrained base")],
    Discriminator(_model_kind, custom_error_type="model_kind", custom_error_message=MODEL_KINDS),
]


# ---------------------------------------------------------------- meta training


class Inner(Section):
    """The inner loop: adapting to one task."""

    steps: Count = Field(1, description="Gradient steps on a task's support set in meta-training.")
    learning_rate: LearningRate = Field(0.4, description="Step size of the inner steps.")
    first_order: bool = Field(False, description="Drop second derivatives in the meta-gradient (fomaml does so always).")
    multi_step_loss: bool = Field(False, description="MAML++: the meta-loss weighs the query loss after every inner step.")
    multi_step_anneal: Count | None = Field(
        DEFAULT_MULTI_STEP_ANNEAL,
        description="Outer iterations over which the multi-step loss moves its weight from uniform to the last step; none keeps it uniform.",
    )
    learn_rates: bool = Field(False, description="MAML++: learn a step size per layer and step.")
    first_order_iterations: Annotated[int, Field(ge=0)] = Field(
        0,
        description="MAML++ derivative-order annealing: first-order meta-gradients for the first this many outer iterations, then second order.",
    )

    @model_validator(mode="after")
    def _anneal_needs_multi_step_loss(self) -> Inner:
        # Compared with the default, not looked up in the fields set: resolved
        # recipes (a run's recipe.yaml) spell out every default.
        if self.multi_step_anneal != DEFAULT_MULTI_STEP_ANNEAL and not self.multi_step_loss:
            raise ValueError("inner.multi_step_anneal applies only with inner.multi_step_loss: true")
        return self

    @model_validator(mode="after")
    def _annealing_needs_second_order(self) -> Inner:
        if self.first_order_iterations and self.first_order:
            raise ValueError(
                "inner.first_order_iterations switches first-order meta-gradients to second order; "
                "with inner.first_order: true every iteration is first order. Drop one of them"
            )
        return self


class Outer(Section):
    """The outer loop: updating the initialisation over meta-batches of tasks."""

    optimizer: Optimizer = Field("adam", description="The meta-optimizer.")
    learning_rate: LearningRate = Field(1.0e-3, description="Peak meta learning rate.")
    lr_schedule: LrSchedule = Field("constant", description="constant, or cosine decay over the iterations.")
    meta_batch_size: Count = Field(32, description="Tasks per outer iteration.")
    iterations: Count = Field(60000, description="Outer iterations.")


def _step_list(value: Any) -> Any:
    return [value] if isinstance(value, int) and not isinstance(value, bool) else value


StepCounts = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1), BeforeValidator(_step_list)]
TEST_TASKS = 600  # the few-shot papers' protocol: mean and 95% interval over 600 tasks


class Evaluation(Section):
    """Meta-validation during training and the final meta-test."""

    tasks: Count = Field(TEST_TASKS, description="Meta-test tasks, fixed by the seed.")
    steps: StepCounts = Field([1], description="Inner steps after which the meta-test is reported: one count or a list.")
    every: Count = Field(1000, description="Meta-validate every this many outer iterations and keep the best.")
    validation_tasks: Count = Field(100, description="Meta-validation tasks, fixed by the seed.")


FEW_SHOT_ALGORITHMS = ("maml", "fomaml", "anil", "metasgd", "reptile", "meta_lstm", "pretrain")
LEARNED_OPTIMIZER = "learned_optimizer"  # the meta algorithm of LearnedOptimizerRecipe


def _meta_algorithm(value: Any) -> Any:
    """Refuse an unknown algorithm with every meta algorithm as the choices, learned_optimizer too."""
    if isinstance(value, str) and value not in FEW_SHOT_ALGORITHMS:
        raise ValueError(paths.unknown_name("algorithm", value, (*FEW_SHOT_ALGORITHMS, LEARNED_OPTIMIZER)))
    return value


class MetaRecipe(RecipeFields):
    """Meta-learning (MAML family, Reptile) over a distribution of few-shot tasks."""

    kind: Literal["meta"] = Field(description="meta: learn an initialisation that adapts to new tasks in a few steps.")
    algorithm: Annotated[Literal[FEW_SHOT_ALGORITHMS], BeforeValidator(_meta_algorithm)] = Field(
        "maml",
        description="maml | fomaml | anil | metasgd | reptile | meta_lstm (Ravi & Larochelle's LSTM learns the updates; "
        "inner.learning_rate is its first rate); pretrain: joint training, the transfer baseline (regression).",
    )
    tasks: TasksSection = Field(description="The few-shot tasks: source sinusoid | folder | tfds | synthetic.")
    model: MetaModel = Field(description="{builtin: mlp | conv4}, or base/freeze/head as in a transfer recipe.")
    inner: Inner = Field(Inner(), description="The inner loop.")
    outer: Outer = Field(Outer(), description="The outer loop.")
    evaluation: Evaluation = Field(Evaluation(), description="Meta-validation and meta-test.")

    @model_validator(mode="after")
    def _check_model(self) -> MetaRecipe:
        regression = self.tasks.source == "sinusoid"
        if regression and self.model.builtin != "mlp":
            raise ValueError("sinusoid tasks need model: {builtin: mlp}")
        if not regression and self.model.builtin == "mlp":
            raise ValueError("image tasks need a convolutional model: builtin: conv4, or a base")
        if self.model.base is not None:
            _check_rgb(self.model.base, self.tasks.channels, "tasks.channels")
        if self.algorithm == "pretrain" and not regression:
            raise ValueError(
                "algorithm pretrain (joint training, then fine-tuning) needs regression tasks; for images, use a transfer recipe as the baseline"
            )
        replicas = len(self.distribute.devices or [])
        if replicas and self.outer.meta_batch_size % replicas:
            raise ValueError(
                f"outer.meta_batch_size ({self.outer.meta_batch_size}) must split evenly over the {replicas} devices of distribute.devices"
            )
        maml_plus_plus = [name for name in ("multi_step_loss", "learn_rates") if getattr(self.inner, name)]
        if self.algorithm in ("reptile", "metasgd", "meta_lstm") and maml_plus_plus:
            raise _field_error(("inner", maml_plus_plus[0]), f"is a MAML++ option; it does not apply to {self.algorithm}", True)
        if self.algorithm == "meta_lstm" and not self.inner.learning_rate < 1:
            raise _field_error(
                ("inner", "learning_rate"),
                "meta_lstm starts its input gate, a sigmoid, at the inner learning rate: it must be below 1",
                self.inner.learning_rate,
            )
        if self.inner.first_order_iterations and self.algorithm in ("fomaml", "reptile", "meta_lstm", "pretrain"):
            raise _field_error(
                ("inner", "first_order_iterations"),
                f"anneals first-order meta-gradients into second-order ones; algorithm {self.algorithm} has no second order. "
                "Use algorithm maml, anil or metasgd, or drop the option",
                self.inner.first_order_iterations,
            )
        if self.precision == "mixed_float16":
            raise _field_error(
                ("precision",),
                "mixed_float16 needs loss scaling, which the meta learner's inner loop does not do; "
                "use mixed_bfloat16 (float32's exponent range, no scaling needed) or float32",
                self.precision,
            )
        return self


# ---------------------------------------------------------------- learned optimizers


class QuadraticOptimizees(Section):
    """Quadratics ||W x - y||^2 with W and y drawn from a standard Gaussian for each optimizee (Andrychowicz et al. 2016)."""

    source: Literal["quadratic"] = Field(description="Random quadratic functions.")
    dimensions: Count = Field(10, description="Dimensions of x (and of y; W is square).")
    optimizees: Count = Field(128, description="Optimizees trained together in each meta-training iteration.")


class GlyphMLPOptimizees(Section):
    """A small MLP classifying synthetic glyphs; each optimizee is a new random initialisation trained by minibatches."""

    source: Literal["synthetic"] = Field(description="Images drawn by a generator from the seed.")
    name: _named("synthetic generator", SYNTHETIC_GENERATORS) = Field(description="The generator, e.g. glyphs.")
    classes: Annotated[int, Field(ge=2)] = Field(10, description="Classes, and outputs of the MLP.")
    first_class: Annotated[int, Field(ge=0)] = Field(0, description="Index of the first class drawn (other indices give other classes).")
    samples: Annotated[int, Field(ge=2)] = Field(
        100, description="Drawings per class for the training optimizees; held-out optimizees train on as many other drawings."
    )
    image_size: ImageSize = Field([16, 16])
    hidden: Annotated[list[Count], Field(min_length=1)] = Field([20], description="Units of each hidden layer of the MLP.")
    activation: Literal["sigmoid", "relu", "tanh"] = Field("sigmoid", description="Activation of the hidden layers.")
    batch_size: Count = Field(128, description="Examples per optimizee step.")
    optimizees: Count = Field(1, description="Optimizees trained together in each meta-training iteration.")


OptimizeeSection = Annotated[QuadraticOptimizees | GlyphMLPOptimizees, Field(discriminator="source")]


class OptimizerNet(Section):
    """The coordinatewise LSTM that proposes each parameter's update from its gradient."""

    layers: Count = Field(2, description="LSTM layers.")
    units: Count = Field(20, description="Units of each LSTM layer.")
    preprocessing_p: _number(gt=0) = Field(
        10.0, description="Gradients g enter as (log|g|/p, sign g) when |g| >= e^-p, else as (-1, e^p g)."
    )


class LearnedInner(Section):
    """The optimizees' training: its horizon, cut into unrolls for truncated backpropagation."""

    steps: Count = Field(100, description="Optimizee steps of one meta-training horizon.")
    unroll: Count = Field(20, description="Steps per unroll: the learned optimizer is updated after each.")

    @model_validator(mode="after")
    def _whole_unrolls(self) -> LearnedInner:
        if self.steps % self.unroll:
            raise ValueError(f"inner.steps must be a whole number of unrolls. Received: steps={self.steps}, unroll={self.unroll}")
        return self


class LearnedOuter(Section):
    """Meta-training of the optimizer network."""

    optimizer: Optimizer = Field("adam", description="The meta-optimizer.")
    learning_rate: LearningRate = Field(1.0e-3, description="Meta learning rate.")
    iterations: Count = Field(2000, description="Horizons trained, each on new optimizees (inner.steps / inner.unroll updates each).")


def _unique_baselines(names: list[str]) -> list[str]:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"each baseline once; {repeated[0]} is listed twice")
    return names


class LearnedEvaluation(Section):
    """Held-out optimizees trained by the learned optimizer and by the baselines, their learning rates tuned."""

    tasks: Count = Field(100, description="Held-out optimizees, fixed by the seed.")
    steps: StepCounts = Field([100, 200], description="Steps after which the loss is reported: one count or a list.")
    baselines: Annotated[list[Literal["sgd", "adam", "rmsprop", "nesterov"]], AfterValidator(_unique_baselines)] = Field(
        ["sgd", "adam", "rmsprop", "nesterov"], description="Hand-designed optimizers compared; nesterov: SGD with Nesterov momentum 0.9."
    )
    tuning_tasks: Count = Field(32, description="Training optimizees on which each baseline's learning rate is tuned over a log grid.")


class LearnedOptimizerRecipe(RecipeFields):
    """A learned optimizer (Andrychowicz et al. 2016): a coordinatewise LSTM trained to train a family of optimizees."""

    kind: Literal["meta"] = Field(description="meta: learn to learn.")
    algorithm: Literal["learned_optimizer"] = Field(description="learned_optimizer: learn the update rule.")
    tasks: OptimizeeSection = Field(description="The optimizees: source quadratic | synthetic (an MLP on glyphs).")
    optimizer_net: OptimizerNet = Field(OptimizerNet(), description="The optimizer network.")
    inner: LearnedInner = Field(LearnedInner(), description="The optimizees' training horizon and unrolls.")
    outer: LearnedOuter = Field(LearnedOuter(), description="The meta-optimizer and how long it trains the optimizer network.")
    evaluation: LearnedEvaluation = Field(LearnedEvaluation(), description="Held-out optimizees against tuned baselines.")

    @model_validator(mode="after")
    def _single_device_float32(self) -> LearnedOptimizerRecipe:
        if self.distribute.strategy != "default":
            raise _field_error(
                ("distribute", "strategy"), "a learned optimizer trains on one device: use strategy default", self.distribute.strategy
            )
        if self.precision != "float32":
            raise _field_error(("precision",), "a learned optimizer trains in float32", self.precision)
        return self


def _meta_kind(value: Any) -> str:
    """Which meta recipe model a meta recipe's data (or model) is: by its algorithm."""
    algorithm = value.get("algorithm") if isinstance(value, dict) else getattr(value, "algorithm", None)
    return "learned optimizer" if algorithm == LEARNED_OPTIMIZER else "few-shot"


META_RECIPES = {"few-shot": MetaRecipe, "learned optimizer": LearnedOptimizerRecipe}
MetaRecipes = Annotated[
    Annotated[MetaRecipe, Tag("few-shot")] | Annotated[LearnedOptimizerRecipe, Tag("learned optimizer")], Discriminator(_meta_kind)
]


def meta_recipe_model(data: Any) -> type[RecipeFields]:
    """The model of a `kind: meta` recipe's data: LearnedOptimizerRecipe for algorithm learned_optimizer, else MetaRecipe."""
    return META_RECIPES[_meta_kind(data)]


# ---------------------------------------------------------------- compare

LAKE_RUNS_PATH = "omniglot/all_runs.zip"


class CompareFolderTasks(EpisodeImages):
    """Episodes from every class of a directory or .zip archive: all of them are test classes."""

    source: Literal["folder"] = Field(description="A directory or .zip archive of class folders.")
    path: DatasetPath = Field(
        description="The directory or .zip; relative paths are looked up beside the recipe, then under the data root."
    )
    include: ClassPattern | None = Field(
        None, description="Keep only the classes whose folder path matches this regular expression; none: every class."
    )


class CompareTfdsTasks(EpisodeImages):
    """Episodes from every class of one split of a TensorFlow Datasets dataset."""

    source: Literal["tfds"] = Field(description="A TensorFlow Datasets dataset.")
    name: str = Field(description="The TFDS dataset name, e.g. omniglot.")
    split: str = Field("test", description="The TFDS split whose classes are the test classes.")
    data_dir: str | None = Field(None, description="Where TFDS keeps its data; none: the TFDS default.")


class CompareSyntheticTasks(EpisodeImages):
    """Episodes from glyph classes first_class, first_class + 1, ...: pick classes that no entrant trains on."""

    source: Literal["synthetic"] = Field(description="Classes drawn by a generator from the seed.")
    name: _named("synthetic generator", SYNTHETIC_GENERATORS) = Field(description="The generator, e.g. glyphs.")
    classes: Annotated[int, Field(ge=2)] = Field(200, description="Number of test classes drawn.")
    first_class: Annotated[int, Field(ge=0)] = Field(0, description="Index of the first class drawn (other indices give other classes).")
    samples: Annotated[int, Field(ge=2)] = Field(20, description="Examples drawn per class.")


class LakeRunsTasks(Section):
    """Lake et al.'s 20-way one-shot test: the 20 runs of all_runs.zip, as published, not sampled."""

    source: Literal["lake_runs"] = Field(description="The runs of Lake's all_runs.zip.")
    path: DatasetPath = Field(
        LAKE_RUNS_PATH,
        validate_default=True,
        description="all_runs.zip (or its unpacked folder); relative paths are looked up beside the recipe, then under the data root.",
    )
    image_size: ImageSize = Field([28, 28])
    channels: Channels = Field(1)


CompareTasks = Annotated[
    SinusoidTaskSource | CompareFolderTasks | CompareTfdsTasks | CompareSyntheticTasks | LakeRunsTasks,
    Field(discriminator="source"),
]


class CompareEvaluation(Section):
    """The fixed test episodes every entrant is scored on, and after how many adaptation steps."""

    tasks: Count | None = Field(
        None,
        description=f"Test episodes, drawn once from the seed; default {TEST_TASKS}. lake_runs: every run of the file, so leave it out.",
    )
    steps: StepCounts = Field([1], description="Adaptation steps after which every entrant is scored: one count or a list.")


class PrototypesAdapt(Section):
    """Nearest class mean of the base's L2-normalised embedding: no gradient step."""

    method: Literal["prototypes"] = Field(description="Classify by the nearest prototype (mean embedding) of each support class.")


class HeadAdapt(Section):
    """A new linear head trained on each task's support set; the base stays frozen."""

    method: Literal["head"] = Field(description="Train a new linear head on the support set, base frozen.")
    learning_rate: LearningRate = Field(1.0e-2, description="Step size of the adaptation steps.")
    optimizer: Optimizer = Field("adam", description="The optimizer of the adaptation steps.")


class FinetuneAdapt(HeadAdapt):
    """A new linear head and the base layers that `unfreeze` selects, trained on each task's support set."""

    method: Literal["finetune"] = Field(description="Train a new head and the unfrozen base layers on the support set.")
    learning_rate: LearningRate = Field(1.0e-3, description="Step size of the adaptation steps.")
    unfreeze: Selector = Field(
        "all", description="Base layers trained with the head: all | none | {last: N} | {until: layer} | {match: regex}."
    )


class Entrant(Section):
    """One model scored on the compare's episodes: a recipe (run first, or its identical finished run reused) or a finished run."""

    name: Annotated[str, Field(min_length=1)] = Field(description="Names the entrant in compare.json and the table; unique in the recipe.")
    recipe: str | None = Field(None, description="A recipe file, relative to this recipe's folder; give recipe or run.")
    run: str | None = Field(None, description="A finished run directory, relative to this recipe's folder; give recipe or run.")
    adapt: PrototypesAdapt | HeadAdapt | FinetuneAdapt | None = Field(
        None,
        discriminator="method",
        description="How a transfer entrant adapts to each task: method prototypes | head | finetune; meta entrants use their own inner loop.",
    )

    @field_validator("recipe")
    @classmethod
    def _resolve_recipe(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else paths.resolve_model_path("recipe", value, info.context)

    @field_validator("run")
    @classmethod
    def _resolve_run(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else paths.resolve_model_path("run", value, info.context)

    @model_validator(mode="after")
    def _recipe_or_run(self) -> Entrant:
        if (self.recipe is None) == (self.run is None):
            both = ", not both" if self.recipe is not None else ""
            raise ValueError(f"give either recipe (a recipe file) or run (a finished run directory){both}")
        return self


def _unique_names(entrants: list[Entrant]) -> list[Entrant]:
    seen: set[str] = set()
    for index, entrant in enumerate(entrants):
        if entrant.name in seen:
            raise _field_error(
                (index, "name"), f"entrant name {entrant.name!r} is used twice; give each entrant its own name", entrant.name
            )
        seen.add(entrant.name)
    return entrants


class CompareRecipe(RecipeIdentity):
    """Meta-learning and transfer entrants scored on the very same fixed test episodes."""

    kind: Literal["compare"] = Field(description="compare: score several runs on the same fixed test episodes.")
    tasks: CompareTasks = Field(
        description="The test episodes: source sinusoid | folder | tfds | synthetic | lake_runs; every class they hold is a test class."
    )
    evaluation: CompareEvaluation = Field(CompareEvaluation(), description="How many test episodes, and the adaptation steps scored.")
    entrants: Annotated[list[Entrant], Field(min_length=1), AfterValidator(_unique_names)] = Field(
        description="The models compared: each a recipe or a finished run, with an optional adapt section."
    )

    @model_validator(mode="after")
    def _check_tasks(self) -> CompareRecipe:
        if self.tasks.source == "lake_runs":
            if self.evaluation.tasks is not None:
                raise _field_error(
                    ("evaluation", "tasks"),
                    "lake_runs scores every run of the file, as published; leave evaluation.tasks out",
                    self.evaluation.tasks,
                )
        elif self.evaluation.tasks is None:
            self.evaluation = self.evaluation.model_copy(update={"tasks": TEST_TASKS})
        if self.tasks.source == "sinusoid":
            for index, entrant in enumerate(self.entrants):
                if entrant.adapt is not None and entrant.adapt.method == "prototypes":
                    raise _field_error(
                        ("entrants", index, "adapt", "method"),
                        "prototypes classify, but sinusoid tasks are regression; use head or finetune",
                        entrant.adapt.method,
                    )
        return self


# ---------------------------------------------------------------- sweep

SAMPLERS = ("tpe", "random", "cmaes")
PRUNERS = ("none", "median", "hyperband")
Bounds = Annotated[list[_number()], Field(min_length=2, max_length=2, description="[low, high], low < high.")]
IntBounds = Annotated[list[int], Field(min_length=2, max_length=2, description="[low, high], low < high.")]


class SpaceEntry(Section):
    """The values one recipe field takes in a sweep: exactly one of uniform, log_uniform, int or choice."""

    uniform: Bounds | None = Field(None, description="Floats drawn evenly between [low, high].")
    log_uniform: Bounds | None = Field(None, description="Floats drawn evenly in log scale between [low, high], low > 0.")
    int: IntBounds | None = Field(None, description="Whole numbers in [low, high], both included.")
    choice: Annotated[list[Any], Field(min_length=1)] | None = Field(
        None, description="One of these values; mappings such as layer selectors ({last: 4}) are allowed."
    )

    @model_validator(mode="after")
    def _one_distribution(self) -> SpaceEntry:
        given = [name for name in ("uniform", "log_uniform", "int", "choice") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of uniform, log_uniform, int or choice. Received: {', '.join(given) if given else 'none of them'}"
            )
        bounds = getattr(self, given[0])
        if given[0] != "choice" and not bounds[0] < bounds[1]:
            raise ValueError(f"{given[0]} needs [low, high] with low < high. Received: {given[0]}={bounds}")
        if given[0] == "log_uniform" and bounds[0] <= 0:
            raise ValueError(f"log_uniform needs a low bound above 0. Received: log_uniform={bounds}")
        return self

    @property
    def distribution(self) -> str:
        """uniform | log_uniform | int | choice: the one given."""
        return next(name for name in ("uniform", "log_uniform", "int", "choice") if getattr(self, name) is not None)


class Objective(Section):
    """What a sweep optimises: a figure of each trial's metrics.json."""

    metric: str = Field(
        description="transfer: test.accuracy, test.loss, phases.N.val_accuracy or phases.N.val_loss; meta: meta_test (the meta-test mean)."
    )
    steps: Count | None = Field(None, description="meta only: the meta-test entry with this many steps; none: the recipe's only one.")
    direction: Literal["maximize", "minimize"] = Field(description="maximize (accuracies) or minimize (losses, mse).")


class WarmStart(Section):
    """Start from the best configurations of past sweeps on the most similar datasets."""

    neighbours: Count = Field(3, description="How many of the nearest past datasets lend their best configuration.")


class SweepRecipe(RecipeIdentity):
    """Hyperparameter search over a transfer or meta recipe with Optuna; each trial is an ordinary run."""

    kind: Literal["sweep"] = Field(description="sweep: tune the fields of another recipe.")
    recipe: str = Field(description="The transfer or meta recipe to tune, relative to this recipe's folder.")
    objective: Objective = Field(description="The metric to optimise and its direction.")
    space: Annotated[dict[str, SpaceEntry], Field(min_length=1)] = Field(
        description="Recipe field paths, as --set names them (schedule.0.learning_rate), each with its distribution."
    )
    trials: Count = Field(20, description="Trials the sweep runs, over all its workers together.")
    sampler: Literal[SAMPLERS] = Field("tpe", description="tpe | random | cmaes (cmaes needs the cmaes package).")
    pruning: Literal[PRUNERS] = Field("none", description="Stop hopeless trials early: epochs (transfer) or meta-validations (meta).")
    warm_start: WarmStart | None = Field(None, description="{neighbours: K}: start from past sweeps on the K nearest datasets; none: cold.")

    @field_validator("recipe")
    @classmethod
    def _resolve_recipe(cls, value: str, info: ValidationInfo) -> str:
        return paths.resolve_model_path("recipe", value, info.context)

    @model_validator(mode="after")
    def _check_against_tuned_recipe(self) -> SweepRecipe:
        # Imported here: the checks load the tuned recipe through the loader, which imports this module.
        from workbench.sweep.checks import sweep_problems

        problems = sweep_problems(self)
        if problems:
            raise ValidationError.from_exception_data(
                "recipe",
                [
                    {"type": PydanticCustomError("value_error", message), "loc": loc, "input": received}
                    for loc, message, received in problems
                ],
            )
        return self


Recipe = Annotated[TransferRecipe | MetaRecipes | CompareRecipe | SweepRecipe, Field(discriminator="kind")]
RECIPE_KINDS = {"transfer": TransferRecipe, "meta": MetaRecipe, "compare": CompareRecipe, "sweep": SweepRecipe}

_SECTIONS = {"data": TypeAdapter(DataSection), "base": TypeAdapter(BaseSection), "tasks": TypeAdapter(TasksSection)}


def Data(**fields: Any) -> Section:
    """A transfer recipe's `data` section: the model of `fields["source"]`, validated."""
    return _SECTIONS["data"].validate_python(fields)


def Base(**fields: Any) -> Section:
    """A `base` section: the model of `fields["source"]`, validated."""
    return _SECTIONS["base"].validate_python(fields)


def Tasks(**fields: Any) -> Section:
    """A meta recipe's `tasks` section: the model of `fields["source"]`, validated."""
    return _SECTIONS["tasks"].validate_python(fields)
