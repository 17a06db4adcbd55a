"""Every tunable of streamrnn, with its default; config.toml documents each one."""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from streamrnn_client.protocol import StreamrnnError

ASSETS = Path(__file__).parent / "assets"
BUILTIN = "builtin"
NOISE_TYPES = ("babble", "white", "pink", "brown")  # [training] noise_types
VOICES = ("espeak", "flite", "piper")  # [synth] voices


@dataclass
class ModelConfig:
    acoustic_model: str = "builtin"
    language_model: str = "builtin"
    device: str = "auto"
    threads: int = 0
    quantize: str = ""


@dataclass
class DecoderConfig:
    method: str = "lexicon"
    ngram: str = "builtin"
    vocabulary: str = "builtin"
    pronunciations: str = "builtin"
    word_beam_size: int = 400
    word_beam_threshold: float = 8.0
    word_beam_tokens: int = 16
    ngram_weight: float = 1.5
    word_score: float = -0.5
    phrase_word_bonus: float = 5.0
    beam_size: int = 8
    token_prune: float = 8.0
    lm_weight: float = 0.3
    word_bonus: float = 0.5
    unk_penalty: float = 4.0
    phrase_bonus: float = 1.5


@dataclass
class EndpointConfig:
    trailing_silence_ms: int = 800
    leading_silence_ms: int = 5000
    max_utterance_s: float = 20.0


@dataclass
class SuggestConfig:
    count: int = 3


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    http_port: int = 8080
    grpc_port: int = 50051
    max_sessions: int = 256
    require_config: bool = False
    drain_timeout_s: float = 10.0


@dataclass
class AuthConfig:
    api_key_sha256: list[str] = field(default_factory=list)


@dataclass
class TlsConfig:
    cert: str = ""
    key: str = ""


@dataclass
class LimitsConfig:
    max_message_bytes: int = 1 << 20
    grpc_max_message_bytes: int = 64 << 20
    max_upload_bytes: int = 25 << 20
    max_session_audio_s: float = 3600.0
    idle_timeout_s: float = 60.0
    max_realtime_factor: float = 0.0
    realtime_burst_s: float = 30.0
    subscriber_queue: int = 256
    subscriber_max_finals: int = 64


@dataclass
class WyomingConfig:
    enabled: bool = False
    port: int = 10300
    allow_without_key: bool = False


@dataclass
class TrainingConfig:
    speeds: list = field(default_factory=lambda: [0.9, 1.0, 1.1])
    spec_augment: bool = True
    noise_probability: float = 0.0
    noise_types: list = field(default_factory=lambda: ["babble", "white", "pink", "brown"])
    noise_snr_db: list = field(default_factory=lambda: [5.0, 25.0])
    reverb_probability: float = 0.0
    reverb_rt60_s: list = field(default_factory=lambda: [0.2, 0.8])
    augmented_copies: int = 2
    synthetic: str = ""
    synthetic_weight: float = 0.5


@dataclass
class SynthConfig:
    voices: list = field(default_factory=lambda: ["espeak", "flite", "piper"])
    rates: list = field(default_factory=lambda: [0.85, 1.15])


@dataclass
class BatchingConfig:
    max_batch: int = 64
    max_wait_ms: float = 5.0
    engine_processes: int = 2


@dataclass
class ResumeConfig:
    window_s: float = 30.0
    ack_interval_s: float = 0.5


@dataclass
class ClusterConfig:
    redis_url: str = ""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    suggestions: SuggestConfig = field(default_factory=SuggestConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    resume: ResumeConfig = field(default_factory=ResumeConfig)
    wyoming: WyomingConfig = field(default_factory=WyomingConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


@dataclass
class Augmentation:
    noise_probability: float = 0.0
    noise_types: tuple[str, ...] = NOISE_TYPES
    snr_db: tuple[float, float] = (5.0, 25.0)
    reverb_probability: float = 0.0
    rt60_s: tuple[float, float] = (0.2, 0.8)

    def __post_init__(self):
        for name in ("noise_probability", "reverb_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be 0..1, got {getattr(self, name)}")
        unknown = set(self.noise_types) - set(NOISE_TYPES)
        if unknown or not self.noise_types:
            raise ValueError(f"noise_types must be some of {', '.join(NOISE_TYPES)}, got {list(self.noise_types)}")
        if self.rt60_s[0] < 0.01:
            raise ValueError(f"reverb_rt60_s must be at least 0.01 s, got {list(self.rt60_s)}")

    @classmethod
    def from_config(cls, training) -> "Augmentation":
        """From the [training] section (or its command-line overrides)."""
        return cls(float(training.noise_probability), tuple(training.noise_types),
                   range_of("noise_snr_db", training.noise_snr_db), float(training.reverb_probability),
                   range_of("reverb_rt60_s", training.reverb_rt60_s))

    @property
    def active(self) -> bool:
        return self.noise_probability > 0 or self.reverb_probability > 0


def range_of(name: str, values) -> tuple[float, float]:
    if len(values) != 2 or not all(isinstance(v, (int, float)) for v in values) or values[0] > values[1]:
        raise ValueError(f"{name} must be [low, high], got {list(values)}")
    return float(values[0]), float(values[1])


class ConfigError(StreamrnnError, ValueError):
    pass


def load_config(path: str | Path | None = None) -> Config:
    """Defaults, overridden by the TOML file at `path` when given."""
    config = Config()
    if path is None:
        return config
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"cannot read config {path}: {err}") from err
    merge(config, data, str(path))
    base = Path(path).resolve().parent
    resolve_model_paths(config, base)
    resolve_tls_paths(config.tls, base)
    if config.training.synthetic and not Path(config.training.synthetic).is_absolute():
        config.training.synthetic = str(base / config.training.synthetic)
    validate(config, str(path))
    return config


def validate(config: Config, where: str) -> None:
    checks = [
        (config.model.quantize in ("", "int8"), "model.quantize must be \"\" (off) or \"int8\""),
        (config.decoder.method in ("lexicon", "beam", "greedy"),
         "decoder.method must be \"lexicon\", \"beam\" or \"greedy\""),
        (config.decoder.word_beam_size >= 1, "decoder.word_beam_size must be at least 1"),
        (config.decoder.word_beam_threshold > 0, "decoder.word_beam_threshold must be positive"),
        (config.decoder.word_beam_tokens >= 1, "decoder.word_beam_tokens must be at least 1"),
        (config.decoder.ngram_weight >= 0, "decoder.ngram_weight must not be negative"),
        (config.decoder.beam_size >= 1, "decoder.beam_size must be at least 1"),
        (config.endpoint.trailing_silence_ms > 0, "endpoint.trailing_silence_ms must be positive"),
        (config.endpoint.max_utterance_s > 0, "endpoint.max_utterance_s must be positive"),
        (0 <= config.server.http_port < 65536, "server.http_port must be 0..65535"),
        (0 <= config.server.grpc_port < 65536, "server.grpc_port must be 0..65535"),
        (config.server.max_sessions >= 1, "server.max_sessions must be at least 1"),
        (0 <= config.wyoming.port < 65536, "wyoming.port must be 0..65535"),
        (not (config.wyoming.enabled and config.auth.api_key_sha256 and not config.wyoming.allow_without_key),
         "wyoming: the Wyoming protocol carries no API key, so with [auth] keys set it is served only with "
         "wyoming.allow_without_key = true (on a network you trust)"),
        (all(is_sha256(h) for h in config.auth.api_key_sha256),
         "auth.api_key_sha256 entries must be 64 hex digits (make one with `streamrnn key new`)"),
        (bool(config.tls.cert) == bool(config.tls.key), "tls.cert and tls.key must be set together"),
        (config.limits.max_message_bytes >= 1024, "limits.max_message_bytes must be at least 1024"),
        (config.limits.grpc_max_message_bytes >= 1024, "limits.grpc_max_message_bytes must be at least 1024"),
        (config.limits.max_upload_bytes >= 1024, "limits.max_upload_bytes must be at least 1024"),
        (config.limits.max_session_audio_s >= 0, "limits.max_session_audio_s must be 0 (no limit) or more"),
        (config.limits.idle_timeout_s >= 0, "limits.idle_timeout_s must be 0 (no limit) or more"),
        (config.limits.max_realtime_factor >= 0, "limits.max_realtime_factor must be 0 (off) or more"),
        (config.limits.realtime_burst_s >= 0, "limits.realtime_burst_s must not be negative"),
        (config.limits.subscriber_queue >= 1, "limits.subscriber_queue must be at least 1"),
        (config.limits.subscriber_max_finals >= 1, "limits.subscriber_max_finals must be at least 1"),
        (config.batching.max_batch >= 1, "batching.max_batch must be at least 1"),
        (config.batching.max_wait_ms >= 0, "batching.max_wait_ms must not be negative"),
        (config.batching.engine_processes >= 0, "batching.engine_processes must be 0 (in the daemon) or more"),
        (config.server.drain_timeout_s > 0, "server.drain_timeout_s must be positive"),
        (config.resume.window_s >= 0, "resume.window_s must be 0 (off) or positive"),
        (config.resume.ack_interval_s >= 0, "resume.ack_interval_s must not be negative"),
        (config.cluster.redis_url == "" or config.cluster.redis_url.startswith(("redis://", "rediss://", "unix://")),
         "cluster.redis_url must be \"\" (off) or a redis://, rediss:// or unix:// URL"),
        (not config.cluster.redis_url or config.resume.window_s > 0,
         "cluster.redis_url needs resume.window_s > 0 (sessions are shared so that clients can resume them)"),
    ]
    checks += training_checks(config.training, config.synth)
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{where}: {message}")


def training_checks(training: TrainingConfig, synth: SynthConfig) -> list[tuple[bool, str]]:
    try:
        Augmentation.from_config(training)
        augmentation_error = ""
    except (ValueError, TypeError) as err:
        augmentation_error = str(err)
    rates = synth.rates
    return [
        (not augmentation_error, f"training: {augmentation_error}"),
        (len(training.speeds) > 0 and all(isinstance(v, (int, float)) and v > 0 for v in training.speeds),
         "training.speeds must be positive numbers"),
        (training.augmented_copies >= 1, "training.augmented_copies must be at least 1"),
        (training.synthetic_weight > 0, "training.synthetic_weight must be positive"),
        (len(synth.voices) > 0 and set(synth.voices) <= set(VOICES), f"synth.voices must be some of {list(VOICES)}"),
        (len(rates) == 2 and 0.25 <= min(rates) and rates[0] <= rates[1] <= 4,
         "synth.rates must be [low, high] within 0.25..4"),
    ]


def is_sha256(value) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower())


def resolve_tls_paths(tls: TlsConfig, base: Path) -> None:
    for key in ("cert", "key"):
        value = getattr(tls, key)
        if value and not Path(value).is_absolute():
            setattr(tls, key, str(base / value))


def resolve_model_paths(config: Config, base: Path) -> None:
    """Relative model paths in a config file are relative to that file."""
    for section, key in (("model", "acoustic_model"), ("model", "language_model"), ("decoder", "ngram"),
                         ("decoder", "vocabulary")):
        value = getattr(getattr(config, section), key)
        if value not in ("", BUILTIN) and not Path(value).is_absolute():
            setattr(getattr(config, section), key, str(base / value))


def model_path(value: str, builtin_name: str) -> str:
    """A configured model path, with "builtin" meaning the model shipped in the package."""
    return str(ASSETS / builtin_name) if value == BUILTIN else value


def merge(config: Config, data: dict, where: str) -> None:
    for section, values in data.items():
        if not hasattr(config, section):
            raise ConfigError(f"{where}: unknown section [{section}]")
        target = getattr(config, section)
        known = {f.name: f for f in dataclasses.fields(target)}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"{where}: unknown key {section}.{key}")
            expected = type(getattr(target, key))
            if expected is float and isinstance(value, int):
                value = float(value)
            if not isinstance(value, expected):
                raise ConfigError(f"{where}: {section}.{key} must be {expected.__name__}, got {value!r}")
            setattr(target, key, value)


def as_dict(config: Config) -> dict:
    return dataclasses.asdict(config)
