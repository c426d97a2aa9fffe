"""Specification of ``avlab.common.media``: layouts, validation, audio, fps pairing, mp4 I/O."""

from __future__ import annotations

import io
import math
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from avlab.common import media
from avlab.common.errors import NodeInputError

NTSC = Fraction(30000, 1001)
SR = 48000
W, H = 96, 64
N_FRAMES = 150


# ---------------------------------------------------------------------------------------------
# helpers / fixtures
# ---------------------------------------------------------------------------------------------

def coded_frame(i: int, rng: np.random.Generator) -> np.ndarray:
    """Top half encodes the frame index in two flat quadrants; bottom half is noise (bulk bytes)."""
    img = np.empty((H, W, 3), np.uint8)
    img[: H // 2, : W // 2] = 16 + 14 * (i // 16)
    img[: H // 2, W // 2 :] = 16 + 14 * (i % 16)
    img[H // 2 :] = rng.integers(0, 256, (H // 2, W, 3), dtype=np.uint8)
    return img


def decode_index(frame: torch.Tensor) -> int:
    """Inverse of :func:`coded_frame` on a decoded float frame ``[H,W,3]``."""
    h, w = frame.shape[:2]
    hi = float(frame[h // 8 : 3 * h // 8, w // 8 : 3 * w // 8].mean()) * 255
    lo = float(frame[h // 8 : 3 * h // 8, 5 * w // 8 : 7 * w // 8].mean()) * 255
    return 16 * round((hi - 16) / 14) + round((lo - 16) / 14)


def sine(freq: float, seconds: float, sr: int, channels: int = 1, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(round(seconds * sr), dtype=torch.float64) / sr
    return (amp * torch.sin(2 * math.pi * freq * t)).float().expand(channels, -1).contiguous()


def peak_frequency(wave: torch.Tensor, sr: int) -> float:
    spec = torch.fft.rfft(wave[0].double() * torch.hann_window(wave.shape[1], dtype=torch.float64))
    return float(spec.abs().argmax()) * sr / wave.shape[1]


class CountingFile(io.RawIOBase):
    """A seekable in-memory file that counts the bytes the demuxer reads."""

    def __init__(self, data: bytes):
        self._b = io.BytesIO(data)
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self._b.read(n)
        self.bytes_read += len(data)
        return data

    def readinto(self, b) -> int:
        n = self._b.readinto(b)
        self.bytes_read += n
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._b.seek(offset, whence)

    def tell(self) -> int:
        return self._b.tell()


@pytest.fixture(scope="module")
def coded_video(tmp_path_factory):
    """150 frames (≈5 s) at 30000/1001 fps with keyframes every 0.5 s and a 440 Hz stereo track."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("media") / "coded.mp4"
    frames = (coded_frame(i, rng) for i in range(N_FRAMES))
    audio = sine(440.0, N_FRAMES / NTSC + 0.5, SR, channels=2)  # longer than the video: trimmed
    result = media.write_video(
        path, frames, NTSC, audio=audio, sample_rate=SR, crf=12, preset="ultrafast", keyframe_interval_s=0.5
    )
    return path, result


@pytest.fixture(scope="module")
def full_decode(coded_video):
    return media.read_video_frames(coded_video[0])


# ---------------------------------------------------------------------------------------------
# layouts and validation
# ---------------------------------------------------------------------------------------------

def test_image_to_frames_and_back_is_identity():
    image = torch.rand(5, 8, 12, 3)
    frames = media.image_to_frames(image, node="AVLab X", input_name="images")
    assert frames.shape == (5, 8, 12, 3)
    assert torch.equal(media.frames_to_image(frames), image)


def test_channels_first_layout_roundtrips():
    image = torch.rand(4, 6, 10, 3)
    frames = media.image_to_frames(image, layout="TCHW")
    assert frames.shape == (4, 3, 6, 10)
    assert torch.equal(frames[:, 1], image[..., 1])
    assert torch.equal(media.frames_to_image(frames, layout="TCHW"), image)


def test_image_to_frames_drops_alpha_and_expands_gray():
    rgba = torch.rand(2, 4, 4, 4)
    assert torch.equal(media.image_to_frames(rgba), rgba[..., :3])
    gray = torch.rand(2, 4, 4, 1)
    out = media.image_to_frames(gray)
    assert out.shape == (2, 4, 4, 3) and torch.equal(out[..., 2], gray[..., 0])


def test_frames_to_image_clamps_and_moves_to_float32_cpu():
    out = media.frames_to_image(torch.tensor([-0.5, 0.5, 1.5], dtype=torch.float64).view(1, 1, 1, 3))
    assert out.dtype == torch.float32 and out.flatten().tolist() == [0.0, 0.5, 1.0]


@pytest.mark.parametrize(
    "bad", [torch.rand(3, 4), torch.rand(1, 4, 4, 2), torch.zeros(0, 4, 4, 3), torch.ones(1, 4, 4, 3, dtype=torch.int64), "img"]
)
def test_image_validation_error_names_node_and_input(bad):
    with pytest.raises(NodeInputError) as err:
        media.image_to_frames(bad, node="AVLab X", input_name="images")
    assert err.value.node == "AVLab X" and err.value.input_name == "images"
    assert "AVLab X" in str(err.value) and "'images'" in str(err.value)


def test_mask_accepts_batched_and_single_masks():
    m = torch.rand(3, 5, 7)
    assert torch.equal(media.mask_to_masks(m), m)
    assert media.mask_to_masks(torch.rand(5, 7)).shape == (1, 5, 7)
    assert torch.equal(media.masks_to_mask(m * 2).max(), torch.tensor(1.0))


def test_mask_validation_error_names_node_and_input():
    with pytest.raises(NodeInputError, match="AVLab Y: input 'mask'"):
        media.mask_to_masks(torch.rand(2, 3, 4, 5), node="AVLab Y", input_name="mask")


def test_audio_roundtrip():
    wav = torch.randn(2, 1000)
    audio = media.waveform_to_audio(wav, 44100)
    assert audio["waveform"].shape == (1, 2, 1000) and audio["sample_rate"] == 44100
    back, sr = media.audio_to_waveform(audio, node="AVLab X", input_name="audio")
    assert sr == 44100 and torch.equal(back, wav)


@pytest.mark.parametrize(
    "bad",
    [
        {"waveform": torch.zeros(1, 2, 10)},
        {"waveform": torch.zeros(2, 10), "sample_rate": 16000},
        {"waveform": torch.zeros(1, 2, 10), "sample_rate": 0},
        {"waveform": torch.zeros(1, 2, 10), "sample_rate": 16000.5},
        torch.zeros(1, 2, 10),
    ],
)
def test_audio_validation_error_names_node_and_input(bad):
    with pytest.raises(NodeInputError) as err:
        media.audio_to_waveform(bad, node="AVLab X", input_name="music")
    assert (err.value.node, err.value.input_name) == ("AVLab X", "music")


# ---------------------------------------------------------------------------------------------
# audio processing
# ---------------------------------------------------------------------------------------------

def test_resample_keeps_duration_and_frequency():
    wav = sine(1000.0, 0.5, 44100)
    out = media.resample_audio(wav, 44100, 16000)
    assert out.shape[1] == math.ceil(wav.shape[1] * 16000 / 44100)
    assert abs(peak_frequency(out, 16000) - 1000.0) <= 16000 / out.shape[1]


def test_channel_conversion():
    st = torch.stack([torch.ones(10), -torch.ones(10) * 0.5])
    assert torch.allclose(media.to_mono(st), torch.full((1, 10), 0.25))
    mono = torch.rand(1, 10)
    assert torch.equal(media.to_stereo(mono), mono.expand(2, -1))
    six = torch.rand(6, 10)
    assert torch.equal(media.to_stereo(six), six[:2])
    with pytest.raises(NodeInputError, match="channels"):
        media.set_channels(st, 3)


def test_safe_clip_scales_loud_audio_instead_of_clipping():
    wav = sine(200.0, 0.1, 8000, amp=2.0)
    out = media.safe_clip(wav, ceiling=0.9)
    assert float(out.abs().max()) == pytest.approx(0.9)
    assert torch.allclose(out, wav * (0.9 / float(wav.abs().max())))  # same shape, only quieter


def test_safe_clip_leaves_quiet_audio_alone_and_zeros_nan():
    quiet = torch.tensor([[0.1, -0.2, float("nan")]])
    assert media.safe_clip(quiet).tolist() == [[pytest.approx(0.1), pytest.approx(-0.2), 0.0]]


# ---------------------------------------------------------------------------------------------
# frame rates
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "given,expected",
    [
        (29.97, NTSC),
        (23.976, Fraction(24000, 1001)),
        (23.98, Fraction(24000, 1001)),
        (59.94, Fraction(60000, 1001)),
        ("30000/1001", NTSC),
        (25.0, Fraction(25)),
        (12.5, Fraction(25, 2)),
        (24, Fraction(24)),
        (NTSC, NTSC),
    ],
)
def test_as_fps_is_exact(given, expected):
    assert media.as_fps(given) == expected


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "fast", None])
def test_as_fps_rejects_non_rates(bad):
    with pytest.raises(NodeInputError, match="AVLab X: input 'fps'"):
        media.as_fps(bad, node="AVLab X", input_name="fps")


def test_resolve_fps_prefers_explicit_input_and_falls_back_to_video():
    assert media.resolve_fps(24.0, NTSC) == 24
    assert media.resolve_fps(0, NTSC) == NTSC
    with pytest.raises(NodeInputError):
        media.resolve_fps(0, None)


def test_audio_samples_per_frame_is_exact():
    assert media.audio_samples_per_frame(48000, 29.97) == Fraction(8008, 5)
    assert media.audio_samples_per_frame(44100, 24) == Fraction(3675, 2)


@pytest.mark.parametrize("fps", [24, 25, 29.97, 30])
@pytest.mark.parametrize("extra", [-1234, 0, 777])
def test_align_audio_to_frames_pads_or_trims_to_exact_length(fps, extra):
    n_frames, sr = 100, 48000
    want = round(Fraction(n_frames * sr) / media.as_fps(fps))
    wav = torch.randn(2, want + extra)
    out = media.align_audio_to_frames(wav, sr, n_frames, fps)
    assert out.shape == (2, want)
    keep = min(want, wav.shape[1])
    assert torch.equal(out[:, :keep], wav[:, :keep])
    assert not out[:, keep:].any()


def test_frame_sample_bounds_do_not_drift():
    bounds = media.frame_sample_bounds(30000, 48000, NTSC)  # ≈ 16.7 minutes of frames
    assert bounds[0] == 0 and int(bounds[-1]) == media.num_audio_samples(30000, 48000, NTSC) == 48048000
    sizes = bounds.diff()
    assert set(sizes.tolist()) <= {1601, 1602}


def test_frame_times_use_the_exact_rate():
    t = media.frame_times(3001, NTSC)
    assert t[-1].item() == pytest.approx(3000 * 1001 / 30000, abs=1e-9)


def test_resample_frame_indices_nearest_frame():
    assert media.resample_frame_indices(10, 30, 15).tolist() == [0, 2, 4, 6, 8]
    assert media.resample_frame_indices(4, 24, 48).tolist() == [0, 1, 1, 2, 2, 3, 3, 3]
    idx = media.resample_frame_indices(300, NTSC, 25)
    assert len(idx) == math.ceil(300 * 25 / NTSC) and int(idx.max()) == 299
    nearest = [min(math.floor(j * NTSC / 25 + Fraction(1, 2)), 299) for j in range(len(idx))]
    assert idx.tolist() == nearest


def test_resample_frames_selects_along_time():
    frames = torch.arange(6.0).view(6, 1, 1, 1).expand(6, 2, 2, 3)
    out = media.resample_frames(frames, 30, 10)
    assert out[:, 0, 0, 0].tolist() == [0.0, 3.0]


# ---------------------------------------------------------------------------------------------
# mp4 writing and streamed reading
# ---------------------------------------------------------------------------------------------

def test_probe_reports_exact_fps_size_and_audio(coded_video):
    path, result = coded_video
    info = media.probe_video(path)
    assert (info.width, info.height, info.fps, info.num_frames) == (W, H, NTSC, N_FRAMES)
    assert info.has_audio and info.sample_rate == SR and info.audio_channels == 2
    assert info.duration == pytest.approx(float(N_FRAMES / NTSC), abs=0.05)
    assert result.num_frames == N_FRAMES and result.fps == NTSC


def test_written_frames_read_back_with_their_pixel_values(full_decode):
    assert full_decode.shape == (N_FRAMES, H, W, 3)
    assert [decode_index(f) for f in full_decode] == list(range(N_FRAMES))
    flat = full_decode[7, 4 : H // 2 - 12, 4 : W // 2 - 8]  # interior of the first quadrant
    assert float((flat * 255 - 16).abs().max()) <= 3


def test_written_audio_matches_video_length_within_one_aac_frame(coded_video):
    wav, sr = media.read_audio(coded_video[0])
    assert sr == SR and wav.shape[0] == 2
    video_samples = media.num_audio_samples(N_FRAMES, SR, NTSC)
    assert abs(wav.shape[1] - video_samples) <= 1024
    assert abs(peak_frequency(wav[:, 4096:], SR) - 440.0) <= 2 * SR / wav.shape[1]


def test_reader_yields_bounded_chunks(coded_video):
    sizes = [c.shape[0] for c in media.iter_video_frames(coded_video[0], chunk_size=8)]
    assert sum(sizes) == N_FRAMES
    assert max(sizes) == 8 and all(s <= 8 for s in sizes)


def test_reader_decodes_lazily(coded_video):
    data = coded_video[0].read_bytes()
    f = CountingFile(data)
    it = media.iter_video_frames(f, chunk_size=4)
    first = next(it)
    assert first.shape[0] == 4 and [decode_index(x) for x in first] == [0, 1, 2, 3]
    assert f.bytes_read < len(data) / 3
    it.close()


def test_segment_read_by_time(coded_video, full_decode):
    seg = media.read_video_frames(coded_video[0], start=1.0, end=2.0)
    first = round(1.0 * NTSC)  # 30 (1.001 s) is the frame nearest 1.0 s
    assert [decode_index(f) for f in seg] == list(range(first, first + 30))
    assert torch.equal(seg, full_decode[first : first + 30])


def test_segment_read_seeks_instead_of_decoding_from_start(coded_video):
    data = coded_video[0].read_bytes()
    f = CountingFile(data)
    seg = media.read_video_frames(f, start=4.0, end=4.2)
    assert [decode_index(x) for x in seg] == list(range(120, 126))
    assert f.bytes_read < len(data) / 2


def test_streamed_fps_conversion_matches_index_mapping(coded_video):
    out = media.read_video_frames(coded_video[0], fps=12, chunk_size=5)
    expected = media.resample_frame_indices(N_FRAMES, NTSC, 12).tolist()
    assert [decode_index(f) for f in out] == expected


def test_streamed_fps_conversion_of_a_segment(coded_video):
    out = media.read_video_frames(coded_video[0], start=1.0, end=2.0, fps=10)
    times = [1.0 + j / 10 for j in range(10)]
    assert [decode_index(f) for f in out] == [round(t * float(NTSC)) for t in times]


def test_native_fps_equals_explicit_native_fps(coded_video):
    a = media.read_video_frames(coded_video[0], start=0.4, end=1.3)
    b = media.read_video_frames(coded_video[0], start=0.4, end=1.3, fps=NTSC)
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "start,end,fps", [(0.4, 1.3, None), (1.0, 2.0, 10), (0.37, None, 24), (4.9, None, None), (3.3, 6.0, 60)]
)
def test_segment_frame_indices_match_the_streamed_reader(coded_video, start, end, fps):
    streamed = media.read_video_frames(coded_video[0], start=start, end=end, fps=fps)
    expected = media.segment_frame_indices(N_FRAMES, NTSC, start, end, fps).tolist()
    assert [decode_index(f) for f in streamed] == expected and expected


def test_resize_frames_keeps_flat_colours():
    frames = torch.full((2, 40, 60, 3), 0.25)
    small = media.resize_frames(frames, 30, 20)
    big = media.resize_frames(frames, 90, 60)
    assert small.shape == (2, 20, 30, 3) and big.shape == (2, 60, 90, 3)
    assert torch.allclose(small, torch.tensor(0.25)) and torch.allclose(big, torch.tensor(0.25))


def test_reader_downscales_to_max_side(coded_video):
    chunk = next(media.iter_video_frames(coded_video[0], max_side=48, chunk_size=2))
    assert chunk.shape == (2, 32, 48, 3)
    assert decode_index(chunk[1]) == 1


def test_audio_segment_equals_slice_of_full_decode(coded_video):
    full, sr = media.read_audio(coded_video[0])
    seg, _ = media.read_audio(coded_video[0], start=1.0, end=1.5)
    assert seg.shape == (2, 24000)
    assert torch.allclose(seg, full[:, 48000:72000], atol=1e-4)


def test_segment_beyond_the_end_yields_nothing(coded_video):
    assert list(media.iter_video_frames(coded_video[0], start=10.0, end=11.0)) == []


def test_reader_rejects_bad_window(coded_video):
    with pytest.raises(NodeInputError, match="'end'"):
        media.read_video_frames(coded_video[0], start=2.0, end=1.0)


def test_missing_file_error_names_node_and_input(tmp_path):
    with pytest.raises(NodeInputError, match="AVLab X: input 'video'"):
        media.probe_video(tmp_path / "nope.mp4", node="AVLab X", input_name="video")


def test_write_streams_chunks_from_a_generator(tmp_path):
    consumed = []

    def chunks():
        for k in range(5):
            consumed.append(k)
            yield torch.full((4, 16, 16, 3), k / 5)

    out = tmp_path / "gen.mp4"
    result = media.write_video(out, chunks(), 24, preset="ultrafast")
    assert consumed == [0, 1, 2, 3, 4] and result.num_frames == 20
    back = media.read_video_frames(out)
    assert back.shape[0] == 20 and float(back[19].mean()) == pytest.approx(0.8, abs=0.02)


def test_write_pads_odd_sizes_by_default_and_can_crop(tmp_path):
    frames = torch.rand(3, 15, 21, 3)
    padded = media.write_video(tmp_path / "p.mp4", frames, 24, preset="ultrafast")
    cropped = media.write_video(tmp_path / "c.mp4", frames, 24, preset="ultrafast", even="crop")
    assert (padded.width, padded.height) == (22, 16) and (cropped.width, cropped.height) == (20, 14)
    assert media.probe_video(tmp_path / "p.mp4").width == 22


def test_write_pads_short_audio_to_video_length(tmp_path):
    out = tmp_path / "short_audio.mp4"
    result = media.write_video(out, torch.rand(48, 16, 16, 3), 24, audio=sine(300, 0.5, 44100), sample_rate=44100,
                               preset="ultrafast")
    assert result.audio_samples == media.num_audio_samples(48, 44100, 24) == 88200
    wav, sr = media.read_audio(out)
    assert sr == 44100 and abs(wav.shape[1] - 88200) <= 1024
    assert float(wav[:, 44100 + 2048 :].abs().max()) < 0.01  # the padded second is silent


def test_write_resamples_audio_at_non_aac_rates(tmp_path):
    out = tmp_path / "odd_rate.mp4"
    result = media.write_video(out, torch.rand(10, 16, 16, 3), 10, audio=sine(500, 1.0, 40000), sample_rate=40000,
                               preset="ultrafast")
    assert result.sample_rate == 44100 and media.probe_video(out).sample_rate == 44100


def test_write_rejects_frames_of_changing_size_and_leaves_no_file(tmp_path):
    out = tmp_path / "bad.mp4"
    with pytest.raises(NodeInputError, match="every frame"):
        media.write_video(out, [torch.rand(2, 16, 16, 3), torch.rand(2, 18, 16, 3)], 24, preset="ultrafast")
    assert not out.exists()


def test_video_without_audio_has_no_audio_track(tmp_path):
    out = tmp_path / "silent.mp4"
    media.write_video(out, torch.rand(4, 16, 16, 3), 30, preset="ultrafast")
    assert media.read_audio(out) is None and not media.probe_video(out).has_audio


def test_write_to_bytesio_and_read_back(tmp_path):
    buf = io.BytesIO()
    media.write_video(buf, torch.rand(6, 16, 16, 3), Fraction(24000, 1001), preset="ultrafast")
    info = media.probe_video(buf)
    assert info.fps == Fraction(24000, 1001) and info.num_frames == 6


def test_reads_packed_int16_audio_files(tmp_path):
    path = tmp_path / "tone.wav"
    samples = (sine(250, 0.25, 16000, channels=2) * 32767).round().short()
    with av.open(str(path), "w", format="wav") as c:
        st = c.add_stream("pcm_s16le", rate=16000)
        st.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(samples.T.reshape(1, -1).numpy(), format="s16", layout="stereo")
        frame.sample_rate = 16000
        for p in st.encode(frame):
            c.mux(p)
        for p in st.encode(None):
            c.mux(p)
    wav, sr = media.read_audio(path)
    assert sr == 16000 and wav.shape == (2, 4000)
    assert torch.allclose(wav, samples.float() / 32768, atol=1e-6)


def test_one_reader_serves_several_segments_and_audio(coded_video):
    with media.VideoReader(coded_video[0]) as reader:
        late = torch.cat(list(reader.iter_frames(start=2.0, end=2.5)))
        early = torch.cat(list(reader.iter_frames(start=0.0, end=0.5)))
        wav, sr = reader.read_audio(start=0.0, end=0.5)
    assert [decode_index(f) for f in late] == list(range(60, 75))
    assert [decode_index(f) for f in early] == list(range(0, 15))
    assert wav.shape == (2, 24000) and sr == SR


# ---------------------------------------------------------------------------------------------
# pairing audio with frames
# ---------------------------------------------------------------------------------------------

def test_audio_matching_frames_passes_within_one_frame():
    wav = torch.zeros(2, 16000 * 2 + 300)          # 2 s + 0.019 s at 16 kHz, 24 fps → < 1 frame off
    assert media.check_audio_matches_frames(wav, 16000, 48, 24.0) is wav


@pytest.mark.parametrize("samples,fps", [(16000, 24.0), (16000 * 3, 24.0), (32000, 12.0)])
def test_mismatched_audio_and_frames_name_node_and_input(samples, fps):
    with pytest.raises(NodeInputError) as err:
        media.check_audio_matches_frames(torch.zeros(2, samples), 16000, 48, fps, node="AVLab X", input_name="music")
    assert (err.value.node, err.value.input_name) == ("AVLab X", "music")
    assert "48 frames" in str(err.value)


def test_empty_audio_is_an_error():
    with pytest.raises(NodeInputError, match="at least one sample"):
        media.check_audio_matches_frames(torch.zeros(2, 0), 16000, 48, 24.0)


@pytest.mark.parametrize("fps", [0, -24.0])
def test_audio_matching_rejects_bad_fps(fps):
    with pytest.raises(NodeInputError, match="fps"):
        media.check_audio_matches_frames(torch.zeros(2, 100), 16000, 48, fps)


@pytest.mark.parametrize("sample_rate", [0, -16000, 16000.5, None])
def test_audio_matching_rejects_bad_sample_rate(sample_rate):
    with pytest.raises(NodeInputError) as err:
        media.check_audio_matches_frames(torch.zeros(2, 100), sample_rate, 48, 24.0, node="AVLab X")
    assert err.value.input_name == "sample_rate"
    assert str(err.value).startswith("AVLab X: input 'sample_rate' expected a positive integer sample rate")


# ---------------------------------------------------------------------------------------------
# bad inputs of the reader and the writer
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def damaged_video(tmp_path_factory):
    """A 4 s, 24 fps clip with audio whose middle 20 % of bytes are overwritten with noise."""
    rng = np.random.default_rng(3)
    path = tmp_path_factory.mktemp("damaged") / "damaged.mp4"
    frames = torch.from_numpy(rng.integers(0, 256, (96, 32, 48, 3), dtype=np.uint8))
    media.write_video(path, frames, 24, audio=sine(330, 4.0, 44100, channels=2), sample_rate=44100,
                      preset="ultrafast", keyframe_interval_s=0.5)
    data = bytearray(path.read_bytes())
    lo, hi = int(0.4 * len(data)), int(0.6 * len(data))
    data[lo:hi] = rng.integers(0, 256, hi - lo, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def _damage_time(err: NodeInputError) -> float:
    import re

    found = re.search(r"at (\d+\.\d+) s \(byte \d+\)", str(err))
    assert found, str(err)
    return float(found.group(1))


@pytest.mark.parametrize("kind", ["video", "audio"])
def test_damaged_file_error_names_node_input_file_and_time(damaged_video, kind):
    with pytest.raises(NodeInputError) as err:
        if kind == "video":
            media.read_video_frames(damaged_video, node="AVLab X", input_name="clip")
        else:
            media.read_audio(damaged_video, node="AVLab X", input_name="clip")
    message = str(err.value)
    assert message.startswith("AVLab X: input 'clip' expected a media file that decodes without errors")
    assert f"damaged {kind} data in {str(damaged_video)!r}" in message
    assert 0.5 < _damage_time(err.value) < 3.5          # the damage is in the middle of the 4 s
    assert isinstance(err.value.__cause__, av.error.FFmpegError)  # PyAV's error stays attached as the cause


def test_segments_before_the_damage_still_read(damaged_video):
    frames = media.read_video_frames(damaged_video, start=0.0, end=0.5)
    wav, sr = media.read_audio(damaged_video, start=0.0, end=0.5)
    assert frames.shape == (12, 32, 48, 3) and wav.shape == (2, sr // 2)


@pytest.mark.parametrize("chunk_seconds", [0, -1.0, float("nan"), float("inf")])
def test_iter_audio_rejects_non_positive_chunks(coded_video, chunk_seconds):
    with media.VideoReader(coded_video[0], node="AVLab X") as reader, pytest.raises(NodeInputError) as err:
        next(reader.iter_audio(chunk_seconds=chunk_seconds))
    assert str(err.value).startswith("AVLab X: input 'chunk_seconds' expected a chunk length in seconds > 0")


@pytest.mark.parametrize("fps", [Fraction(1, 131072), Fraction(1, 2**31 - 1), Fraction(9999, 1310578928),
                                 Fraction(2**31), "0.0123456789"])
def test_write_rejects_fps_the_mp4_time_base_cannot_store(tmp_path, fps):
    out = tmp_path / "fps.mp4"
    with pytest.raises(NodeInputError) as err:
        media.write_video(out, torch.rand(2, 16, 16, 3), fps, preset="ultrafast", node="AVLab X")
    assert err.value.input_name == "fps"
    assert str(err.value).startswith(
        "AVLab X: input 'fps' expected a frame rate h264/mp4 can store: num/den with num <= 2147483647 and "
        "den <= 131071 (1/131071 .. 2147483647 fps)")
    assert not out.exists()


@pytest.mark.parametrize("fps", [Fraction(1, 131071), Fraction(1, 65536), Fraction(2**31 - 1, 131071),
                                 Fraction(2**31 - 1), Fraction(10**6), Fraction(9999, 131071)])
def test_write_accepts_the_extreme_fps_it_allows_and_keeps_them_exact(fps):
    buf = io.BytesIO()
    media.write_video(buf, torch.rand(3, 16, 16, 3), fps, preset="ultrafast")
    assert media.probe_video(buf).fps == fps and media.read_video_frames(buf).shape[0] == 3


def test_write_creates_missing_output_folders(tmp_path):
    out = tmp_path / "new" / "sub" / "clip.mp4"
    media.write_video(out, torch.rand(2, 16, 16, 3), 24, preset="ultrafast")
    assert media.probe_video(out).num_frames == 2


@pytest.mark.parametrize("case", ["parent is a file", "path is a folder"])
def test_write_to_an_unusable_path_names_the_input_and_the_path(tmp_path, case):
    (tmp_path / "a_file").write_text("not a folder")
    bad = tmp_path / "a_file" / "clip.mp4" if case == "parent is a file" else tmp_path
    with pytest.raises(NodeInputError) as err:
        media.write_video(bad, torch.rand(2, 16, 16, 3), 24, node="AVLab X", dest_input="filename_prefix")
    assert str(err.value).startswith(f"AVLab X: input 'filename_prefix' expected a writable output file path, "
                                     f"got {str(bad)!r} ([Errno")
    assert (tmp_path / "a_file").read_text() == "not a folder" and tmp_path.is_dir()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_write_refuses_non_finite_frames_naming_the_first_bad_one(tmp_path, bad):
    def chunks():
        for k in range(3):
            chunk = torch.rand(4, 16, 16, 3)
            if k == 2:
                chunk[1, 3, 5, 0] = bad      # frame 2 * 4 + 1 = 9
                chunk[3, 0, 0, 2] = bad
            yield chunk

    out = tmp_path / "nan.mp4"
    with pytest.raises(NodeInputError) as err:
        media.write_video(out, chunks(), 24, preset="ultrafast", node="AVLab X", input_name="images")
    assert str(err.value) == ("AVLab X: input 'images' expected finite pixel values (no NaN or inf), "
                              "got NaN/inf pixels in frame 9")
    assert not out.exists()                  # the half-written file is removed


def test_write_refuses_non_finite_first_frame():
    frames = torch.rand(2, 16, 16, 3)
    frames[0, 0, 0, 0] = float("nan")
    with pytest.raises(NodeInputError, match="AVLab: input 'images' expected finite pixel values .* in frame 0$"):
        media.write_video(io.BytesIO(), frames, 24)
