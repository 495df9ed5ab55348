"""The members of a multitask run: their configs (checked to share the encoders), the one vocabulary of
the members that share a text encoder, and the tying of every member model to one pair of encoders."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ...config import Config, load_config
from ...data.loading import read_split
from ...data.tokenizer import build_tokenizer
from ...errors import ConfigError
from ...models.factory import text_tokenizer_file

# What every member must have as the multitask config has it: the encoders and what they read (the text
# encoder's position table is data.max_question_length long).
SHARED_KEYS = ("model.dim", "model.image_encoder", "model.text_encoder", "data.image_size",
               "data.max_question_length")
TEXT_KEYS = ("model.text_encoder", "data.max_question_length")
TEXT_ENCODER_TASKS = ("vqa", "retrieval", "matching", "classification")  # captioning's decoder embeds its own words
SHARED_PARTS = ("image_encoder", "text_encoder")


def value_at(config: Config, key: str):
    section, name = key.split(".")
    return getattr(getattr(config, section), name)


def load_members(config: Config) -> dict[str, Config]:
    """Each member's config (its file, with the run's seed), checked against the shared encoders."""
    members = {}
    for name, path in config.multitask.tasks.items():
        member = load_config(path)
        check_member(name, path, member, config)
        member.seed = config.seed  # one seed: the members' data orders and negatives are the run's
        members[name] = member
    return members


def check_member(name: str, path: str, member: Config, config: Config) -> None:
    """One line for a member that is another task, names other encoders, or uses what multitask does not run."""
    where = f"multitask member {name} ({path})"
    if member.task != name:
        raise ConfigError(f"{where}: the file is a config of task {member.task}, not {name}")
    for key in SHARED_KEYS:
        if key in TEXT_KEYS and name not in TEXT_ENCODER_TASKS:
            continue
        mine, shared = value_at(member, key), value_at(config, key)
        if mine != shared:
            raise ConfigError(f"{where}: {key} is {mine}, but the multitask config's is {shared}: members share "
                              "one image and text encoder, so set it the same in both")
    unsupported = {"data.feature_cache": member.data.feature_cache, "data.stream": member.data.stream,
                   "train.init": member.train.init, "train.freeze": member.train.freeze,
                   "captioning.select_on": name == "captioning" and member.captioning.select_on}
    for key, value in unsupported.items():
        if value:
            raise ConfigError(f"{where}: {key} is not supported in multi-task training: remove it")


def member_texts(name: str, config: Config) -> list[str]:
    """The training texts a member's own run builds its word vocabulary from."""
    if name in ("matching", "classification"):
        from ..labelled.data import read_labelled

        return [s.question for s in read_labelled(config, "train").samples]
    samples = read_split(config.data, "train").samples
    if name == "retrieval":
        return [c for s in samples for c in s.captions]
    return [s.question for s in samples]


def shared_vocabulary(members: dict[str, Config]):
    """One word tokenizer over the training texts of every member with a text encoder; None where no two
    members share one, or where the text encoder is pretrained (it brings its own vocabulary)."""
    readers = [name for name in members if name in TEXT_ENCODER_TASKS]
    if len(readers) < 2 or text_tokenizer_file(members[readers[0]]) is not None:
        return None
    return build_tokenizer(text for name in readers for text in member_texts(name, members[name]))


def tie_encoders(models: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """Every member model's image_encoder (and text_encoder, where it has one) becomes the first member's
    own: one set of weights that every head trains. Returns the shared parts by name."""
    shared: dict[str, nn.Module] = {}
    for name, model in models.items():
        for part in SHARED_PARTS:
            mine = getattr(model, part, None)
            if mine is None:
                continue
            if part not in shared:
                shared[part] = mine
                continue
            check_same_shapes(shared[part], mine, f"{name}'s {part}")
            setattr(model, part, shared[part])
    return shared


def check_same_shapes(shared: nn.Module, mine: nn.Module, what: str) -> None:
    """The member's part holds the same weights' shapes as the shared one (else tying would be a lie)."""
    ours, theirs = shared.state_dict(), mine.state_dict()
    differ = [k for k in ours.keys() | theirs.keys()
              if k not in ours or k not in theirs or ours[k].shape != theirs[k].shape]
    if differ:
        raise ConfigError(f"multitask: {what} differs from the shared one (e.g. {sorted(differ)[0]}): "
                          "the members must build the same encoders")


def save_config(config: Config, model_dir: Path) -> None:
    """The multitask config as OUT_DIR/model/config.yaml: what `vlfuse eval OUT_DIR/model` reads."""
    import yaml

    from ...config import to_dict
    from ...models.saved import CONFIG

    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / CONFIG).write_text(yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True),
                                    encoding="utf-8")
