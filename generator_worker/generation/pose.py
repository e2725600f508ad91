"""Person analysis with mediapipe 0.10.21: 33 pose landmarks and a soft person mask.

Only models bundled in the mediapipe wheel are used (pose landmark model complexity 1 and the
general selfie-segmentation model), so nothing is downloaded at run time. The graphs are not
thread-safe; calls are serialised with a lock.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from generator_worker.generation.base import NoPersonFoundError
from generator_worker.generation.cvcompat import cv2

FloatArray = NDArray[np.float32]

# mediapipe pose landmark indices
NOSE = 0
EAR_L, EAR_R = 7, 8
SHOULDER_L, SHOULDER_R = 11, 12
ELBOW_L, ELBOW_R = 13, 14
WRIST_L, WRIST_R = 15, 16
HAND_L = (15, 17, 19, 21)
HAND_R = (16, 18, 20, 22)
HIP_L, HIP_R = 23, 24
KNEE_L, KNEE_R = 25, 26
ANKLE_L, ANKLE_R = 27, 28
FACE = tuple(range(11))

MODEL_COMPLEXITY = 1  # the only pose landmark model bundled in the 0.10.21 wheel
MIN_VISIBILITY = 0.5


def in_picture(points: FloatArray, visibility: FloatArray, width: int, height: int) -> FloatArray:
    """The visibility with 0 for landmarks outside the width x height photo: mediapipe
    extrapolates joints out of the picture (the hips of a waist-up portrait) with a middling
    visibility, and such a point is a guess, not a measurement."""
    x, y = points[:, 0], points[:, 1]
    outside = (x < 0) | (x >= width) | (y < 0) | (y >= height)
    return np.where(outside, np.float32(0.0), visibility).astype(np.float32)


def reliable(visibility: FloatArray, *indices: int) -> bool:
    """Whether all these landmarks were seen (inside the photo, confident enough to pin to)."""
    return bool(all(float(visibility[i]) >= MIN_VISIBILITY for i in indices))


class Facing(str, enum.Enum):
    FRONT = "front"  # the person faces the camera
    BACK = "back"


@dataclass(frozen=True)
class PersonAnalysis:
    landmarks: FloatArray  # (33, 2) pixel coordinates (x, y)
    visibility: FloatArray  # (33,)
    mask: FloatArray  # (H, W) person probability 0..1
    facing: Facing

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape[0], self.mask.shape[1]

    def cropped(self, x0: int, y0: int, w: int, h: int, width: int, height: int) -> PersonAnalysis:
        """The analysis of the crop (x0, y0, w, h) resized to width x height."""
        scale = np.array([width / w, height / h], np.float32)
        landmarks = (self.landmarks - np.array([x0, y0], np.float32)) * scale
        mask = cv2.resize(
            self.mask[y0 : y0 + h, x0 : x0 + w], (width, height), interpolation=cv2.INTER_LINEAR
        )
        return replace(self, landmarks=landmarks.astype(np.float32), mask=mask.astype(np.float32))

    def shoulder_width(self) -> float:
        return float(np.linalg.norm(self.landmarks[SHOULDER_L] - self.landmarks[SHOULDER_R]))


class PersonAnalyzer:
    """Runs the bundled mediapipe pose and selfie-segmentation graphs on RGB arrays."""

    def __init__(self) -> None:
        import mediapipe as mp  # type: ignore[import-untyped]

        self._lock = threading.Lock()
        self._pose = mp.solutions.pose.Pose(
            static_image_mode=True,
            model_complexity=MODEL_COMPLEXITY,
            enable_segmentation=False,
            min_detection_confidence=0.5,
        )
        self._segmenter = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)

    def landmarks(self, rgb: NDArray[np.uint8]) -> tuple[FloatArray, FloatArray]:
        """Pose landmarks in pixels and their visibility; NoPersonFoundError when none."""
        h, w = rgb.shape[:2]
        with self._lock:
            result = self._pose.process(rgb)
        if result.pose_landmarks is None:
            raise NoPersonFoundError("no person found in the model photo")
        points = np.array([(p.x * w, p.y * h) for p in result.pose_landmarks.landmark], np.float32)
        visibility = np.array([p.visibility for p in result.pose_landmarks.landmark], np.float32)
        if min(visibility[SHOULDER_L], visibility[SHOULDER_R]) < MIN_VISIBILITY:
            raise NoPersonFoundError("the person's shoulders are not visible in the model photo")
        if np.linalg.norm(points[SHOULDER_L] - points[SHOULDER_R]) < 0.04 * max(h, w):
            raise NoPersonFoundError("the person in the model photo is too small or side-on")
        return points, visibility

    def segment(self, rgb: NDArray[np.uint8]) -> FloatArray:
        with self._lock:
            result = self._segmenter.process(rgb)
        mask = np.asarray(result.segmentation_mask, np.float32)
        if mask.shape != rgb.shape[:2]:  # pragma: no cover - mediapipe returns input size
            mask = cv2.resize(mask, (rgb.shape[1], rgb.shape[0]))
        # sharpen the probability into a soft matte
        return np.clip((mask - 0.25) / 0.5, 0.0, 1.0).astype(np.float32)

    def analyze(self, rgb: NDArray[np.uint8]) -> PersonAnalysis:
        points, visibility = self.landmarks(rgb)
        mask = self.segment(rgb)
        facing = Facing.FRONT if points[SHOULDER_L, 0] > points[SHOULDER_R, 0] else Facing.BACK
        return PersonAnalysis(landmarks=points, visibility=visibility, mask=mask, facing=facing)

    def close(self) -> None:
        with self._lock:
            self._pose.close()
            self._segmenter.close()


def protected_mask(person: PersonAnalysis) -> FloatArray:
    """Soft mask (0..1) of the face, hair and visible hands: garments never cover these."""
    h, w = person.shape
    canvas = np.zeros((h, w), np.uint8)
    lm = person.landmarks
    shoulder = max(person.shoulder_width(), 1.0)
    ears = lm[[EAR_L, EAR_R]]
    ear_span = max(float(np.linalg.norm(ears[0] - ears[1])), 0.35 * shoulder)
    face_center = lm[list(FACE)].mean(axis=0)
    center = (face_center[0], face_center[1] - 0.35 * ear_span)
    axes = (0.95 * ear_span, 1.45 * ear_span)
    cv2.ellipse(
        canvas,
        (round(center[0]), round(center[1])),
        (round(axes[0]), round(axes[1])),
        0,
        0,
        360,
        255,
        thickness=-1,
    )
    # the chin: the head ellipse must not reach the shoulders' line
    chin_limit = int(min(lm[SHOULDER_L, 1], lm[SHOULDER_R, 1]) - 0.12 * shoulder)
    canvas[max(0, chin_limit) :] = 0
    for hand in (HAND_L, HAND_R):
        if float(person.visibility[list(hand)].mean()) < MIN_VISIBILITY:
            continue
        pts = lm[list(hand)]
        c = pts.mean(axis=0)
        radius = max(float(np.linalg.norm(pts - c, axis=1).max()) * 1.6, 0.12 * shoulder)
        cv2.circle(canvas, (round(c[0]), round(c[1])), round(radius), 255, thickness=-1)
    protect = canvas.astype(np.float32) / 255.0 * np.clip(person.mask * 1.5, 0, 1)
    sigma = max(1.0, 0.004 * max(h, w))
    return cv2.GaussianBlur(protect, (0, 0), sigma).astype(np.float32)  # type: ignore[no-any-return]
