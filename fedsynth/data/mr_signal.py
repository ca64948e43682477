"""MR signal equations and tissue relaxation tables used by the embedded phantom.

Signals are signed longitudinal/transverse magnetisations in units of M0 (PD of CSF = 1); the
phantom mixes them per voxel by tissue fraction and takes the magnitude, as a scanner would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Tissue:
    """Relaxation times (ms) and proton density (relative to CSF) of one tissue."""

    t1: float
    t2: float
    pd: float


# Tissue order = phantom label order (label = index + 1; 0 is background). The last four
# are the non-brain tissues of a whole head (`PhantomConfig.heads`).
TISSUES = ("csf", "gm", "wm", "oedema", "tumour", "ecsf", "skull", "muscle", "fat")

# Non-brain tissues, the same at both field strengths where the literature gives one value.
# Extra-cerebral CSF is CSF: its own entry, the CSF values. Cortical bone: T2* ≈ 0.4 ms
# (ultrashort-TE measurements, Du & Bydder; Du et al., JMR 2010), T1 ≈ 220 ms, water ≈ 20 %
# by volume, so it is dark at every TE used here. Muscle: Stanisz et al., MRM 2005 (1.5 T
# 1008/44, 3 T 1412/50), PD ≈ its water fraction. Subcutaneous fat: de Bazelaire et al.,
# Radiology 2004 (1.5 T 343/58, 3 T 382/68), PD 1.0 as in BrainWeb (Aubert-Broche 2006).
_BONE = Tissue(220, 0.4, 0.2)

RELAXATION: dict[float, dict[str, Tissue]] = {
    # 1.5 T: CSF/GM/WM from the BrainWeb simulator table (Kwan, Evans & Pike, IEEE TMI 1999).
    1.5: {
        "csf": Tissue(2569, 329, 1.00),
        "gm": Tissue(833, 83, 0.86),
        "wm": Tissue(500, 70, 0.77),
        # Lesions: illustrative values inside published glioma ranges (longer T1/T2 than
        # parenchyma; vasogenic oedema has the longest T2 of the two).
        "oedema": Tissue(1100, 200, 0.92),
        "tumour": Tissue(1300, 120, 0.90),
        "ecsf": Tissue(2569, 329, 1.00),
        "skull": _BONE,
        "muscle": Tissue(1008, 44, 0.80),
        "fat": Tissue(343, 58, 1.00),
    },
    # 3 T: GM/WM from Stanisz et al., MRM 2005 (T1 1820/1084, T2 99/69; cf. Wansapura et al.,
    # JMRI 1999); CSF T1 from Lu et al., JMRI 2005; CSF T2 ~500 ms is an approximate literature
    # value. PD does not depend on field strength.
    3.0: {
        "csf": Tissue(4163, 500, 1.00),
        "gm": Tissue(1820, 99, 0.86),
        "wm": Tissue(1084, 69, 0.77),
        "oedema": Tissue(1900, 180, 0.92),
        "tumour": Tissue(2100, 110, 0.90),
        "ecsf": Tissue(4163, 500, 1.00),
        "skull": _BONE,
        "muscle": Tissue(1412, 50, 0.80),
        "fat": Tissue(382, 68, 1.00),
    },
}

# MPRAGE readout: one gradient-echo train per inversion, centred on TI (3D partitions x echo
# spacing), as in Deichmann et al., NeuroImage 2000.
MPRAGE_READOUT_PULSES = 160
MPRAGE_ECHO_SPACING_MS = 7.0


@dataclass(frozen=True)
class PulseSequence:
    """One acquisition: `kind` is SE (spin echo), FLAIR (inversion recovery) or MPRAGE."""

    kind: str
    tr: float
    te: float
    ti: float | None = None
    flip: float | None = None

    def as_dict(self) -> dict[str, float | str]:
        """Protocol entry for dataset.json (times in ms, flip angle in degrees)."""
        out: dict[str, float | str] = {"sequence": self.kind, "TR_ms": round(self.tr, 1)}
        out["TE_ms"] = round(self.te, 1)
        if self.ti is not None:
            out["TI_ms"] = round(self.ti, 1)
        if self.flip is not None:
            out["flip_deg"] = round(self.flip, 1)
        return out


def csf_null_ti(t1_csf: float, tr: float) -> float:
    """Inversion time that nulls CSF: TI = T1·ln(2 / (1 + e^(−TR/T1)))."""
    return t1_csf * math.log(2.0 / (1.0 + math.exp(-tr / t1_csf)))


def spin_echo(t: Tissue, tr: float, te: float) -> float:
    """S = PD·(1 − 2e^(−(TR−TE/2)/T1) + e^(−TR/T1))·e^(−TE/T2)."""
    recovery = 1 - 2 * math.exp(-(tr - te / 2) / t.t1) + math.exp(-tr / t.t1)
    return t.pd * recovery * math.exp(-te / t.t2)


def inversion_recovery(t: Tissue, tr: float, te: float, ti: float) -> float:
    """S = PD·(1 − 2e^(−TI/T1) + e^(−TR/T1))·e^(−TE/T2), signed (FLAIR)."""
    recovery = 1 - 2 * math.exp(-ti / t.t1) + math.exp(-tr / t.t1)
    return t.pd * recovery * math.exp(-te / t.t2)


def mprage(t: Tissue, tr: float, te: float, ti: float, flip: float) -> float:
    """Signed MPRAGE signal at the k-space centre (the echo at TI), in steady state.

    Simplified model: inversion, free recovery, a train of `MPRAGE_READOUT_PULSES` α-pulses
    centred on TI driving Mz towards its saturation value, free recovery to TR. T2 stands in
    for T2* in the echo decay. Gives WM > GM > CSF at 1.5 T and 3 T.
    """
    alpha = math.radians(flip)
    e = math.exp(-MPRAGE_ECHO_SPACING_MS / t.t1)
    q = math.cos(alpha) * e
    m_sat = t.pd * (1 - e) / (1 - q)  # Mz the readout train tends to
    half_train = MPRAGE_READOUT_PULSES / 2 * MPRAGE_ECHO_SPACING_MS
    e_before = math.exp(-(ti - half_train) / t.t1)
    e_after = math.exp(-(tr - ti - half_train) / t.t1)
    q_train = q**MPRAGE_READOUT_PULSES
    # Mz just before the inversion, from requiring the TR cycle to repeat itself.
    m_start = (
        t.pd * (1 - e_after) + e_after * (m_sat * (1 - q_train) + q_train * t.pd * (1 - e_before))
    ) / (1 + e_after * q_train * e_before)
    m_train_start = t.pd - (t.pd + m_start) * e_before
    m_centre = m_sat + (m_train_start - m_sat) * q ** (MPRAGE_READOUT_PULSES / 2)
    return math.sin(alpha) * m_centre * math.exp(-te / t.t2)


def tissue_signal(t: Tissue, seq: PulseSequence) -> float:
    """Signed signal of a pure tissue under `seq`."""
    if seq.kind == "SE":
        return spin_echo(t, seq.tr, seq.te)
    if seq.kind == "FLAIR" and seq.ti is not None:
        return inversion_recovery(t, seq.tr, seq.te, seq.ti)
    if seq.kind == "MPRAGE" and seq.ti is not None and seq.flip is not None:
        return mprage(t, seq.tr, seq.te, seq.ti, seq.flip)
    raise ValueError(f"incomplete or unknown sequence {seq!r}")
