"""Coded concepts used by the result objects (SR, SEG, KOS, summary).

Standard codes come from SNOMED CT (SCT), DICOM (DCM), LOINC (LN) and UCUM, as listed in
PS3.16 (CID 100 procedures, CID 7010 key object titles, CID 7150/7151 segmentation categories
and types, TID 1500/1501/1410 measurement reports). Where pydicom's code dictionary (generated
from PS3.16) has the concept, it is taken from there (``codes.SCT.Brain``), so the value, scheme
and meaning are the standard's; each constant says where it comes from and, when it was built
by hand, why. Concepts with no standard code (the phase-pattern categories of the border-slice
method, the phase-handedness convention, the per-class counts) live in a private coding scheme,
``99BORDERPHASE``, that every object using it declares in its Coding Scheme Identification
Sequence (PS3.3 C.12.1.1.5; "99" prefix per PS3.16 section 8.2).

What the algorithm can claim: it sees a dark spot on GRE magnitude and the sign of its
susceptibility on phase, nothing about the patient. So a paramagnetic spot is coded as the
morphology (hemorrhage), not as a clinical diagnosis; no concept here says "silent",
"pathologic" or anything else only a clinician can judge. The word "microbleed" reaches the
reader through the segment label and description ("CMB 1 microbleed") and the SR text.
"""
from __future__ import annotations

from typing import Optional

from highdicom.sr import CodedConcept
from pydicom import Dataset
from pydicom.sr.codedict import codes

from dicom_io.results.report import Finding
from dicom_io.vocabulary import Handedness

#: Designator of the private coding scheme (PS3.16 8.2: local designators start with "99").
PRIVATE_SCHEME = "99BORDERPHASE"
PRIVATE_SCHEME_NAME = "borderphase border-slice phase method"
PRIVATE_SCHEME_VERSION = "1"
PRIVATE_SCHEME_ORGANIZATION = "borderphase project"


def _private(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value=value, scheme_designator=PRIVATE_SCHEME, meaning=meaning)


def coding_scheme_identification() -> Dataset:
    """One item of the Coding Scheme Identification Sequence (0008,0110) declaring the
    private scheme (PS3.3 Table C.12-2 SOP Common Module)."""
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = PRIVATE_SCHEME_NAME
    item.CodingSchemeVersion = PRIVATE_SCHEME_VERSION
    item.CodingSchemeResponsibleOrganization = PRIVATE_SCHEME_ORGANIZATION
    return item


# --- findings (GUIDE: codes for the SR/SEG) --------------------------------------------------
#: SCT 50960005 "Hemorrhage", pydicom ``codes.SCT.Hemorrhage``; in PS3.16 CID 7151 Segmentation
#: Property Type (via CID 7194/7159, under category Morphologically abnormal structure), so a
#: viewer's segment-type lists know it. A microbleed is a small focus of old blood products; this
#: is the morphology the phase shows (paramagnetic), and nothing more. Replaces SCT 723857007
#: "Silent micro-hemorrhage of brain", whose "silent" (no symptoms) is a clinical judgement.
HEMORRHAGE = CodedConcept.from_code(codes.SCT.Hemorrhage)
#: The finding type of a spot called microbleed (name kept for the SR and the read-back).
MICROBLEED = HEMORRHAGE
#: SCT 18115005, fully specified name "Pathologic calcification, calcified structure (morphologic
#: abnormality)"; pydicom ``codes.SCT.PathologicCalcification`` (meaning "pathologic
#: calcification", CID 3802/6335-6338).
#: The meaning written here is "Calcification": the method also reports physiological
#: calcifications (pineal, choroid plexus), and "pathologic" would be a judgement it cannot make.
#: Code Meaning is the human-readable text of the concept; readers match value and scheme.
CALCIFICATION = CodedConcept(codes.SCT.PathologicCalcification.value, "SCT", "Calcification")
#: SCT 301766008 "Lesion of brain", pydicom ``codes.SCT.LesionOfBrain`` (CID 7151/7194/7199):
#: the finding type of an indeterminate spot (a dark spot, not called either way).
LESION_OF_BRAIN = CodedConcept(codes.SCT.LesionOfBrain.value, "SCT", "Lesion of brain")
#: SCT 12738006 "Brain", pydicom ``codes.SCT.Brain`` (CID 4 anatomic region, CID 7151).
BRAIN = CodedConcept.from_code(codes.SCT.Brain)
#: SCT 49755003, pydicom ``codes.SCT.MorphologicallyAbnormalStructure`` (CID 7150 segmentation
#: property category).
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = CodedConcept(codes.SCT.MorphologicallyAbnormalStructure.value, "SCT",
                                                  "Morphologically abnormal structure")

FINDING_BY_CLASS: dict[Finding, CodedConcept] = {
    Finding.MICROBLEED: MICROBLEED,
    Finding.CALCIFICATION: CALCIFICATION,
    Finding.INDETERMINATE: LESION_OF_BRAIN,
}

#: Human tracking identifiers ("CMB 3", "Calc 1", "Indet 2") and SEG labels per finding.
TRACKING_PREFIX: dict[Finding, str] = {
    Finding.MICROBLEED: "CMB", Finding.CALCIFICATION: "Calc", Finding.INDETERMINATE: "Indet"}

# --- measurements ---------------------------------------------------------------------------
#: SCT 81827009, pydicom ``codes.SCT.Diameter`` (CID 7470 linear measurements).
DIAMETER = CodedConcept.from_code(codes.SCT.Diameter)
#: DCM 111012, pydicom ``codes.DCM.CertaintyOfFinding`` (CID 6048).
CERTAINTY_OF_FINDING = CodedConcept.from_code(codes.DCM.CertaintyOfFinding)
#: SCT 246206008, pydicom ``codes.SCT.NumberOfLesions`` (dictionary meaning is the FSN
#: "Number of lesions (observable entity)"; the preferred term is written).
NUMBER_OF_LESIONS = CodedConcept(codes.SCT.NumberOfLesions.value, "SCT", "Number of lesions")
#: DCM 111038, pydicom ``codes.DCM.NumberOfCalcifications``.
NUMBER_OF_CALCIFICATIONS = CodedConcept.from_code(codes.DCM.NumberOfCalcifications)
#: No standard concept counts microbleeds or undecided spots: private scheme.
NUMBER_OF_MICROBLEEDS = _private("BP-NCMB", "Number of cerebral microbleeds")
NUMBER_OF_INDETERMINATE = _private("BP-NINDET", "Number of indeterminate dark spots")

#: UCUM units: "mm" and "%" as in pydicom ``codes.UCUM``; "{count}" is a UCUM annotation
#: (a dimensionless count; not in pydicom's dictionary, valid UCUM syntax).
UNIT_MM = CodedConcept("mm", "UCUM", "millimeter")
UNIT_PERCENT = CodedConcept("%", "UCUM", "percent")
UNIT_COUNT = CodedConcept("{count}", "UCUM", "count")

#: SCT 52101004 / 272519000, pydicom ``codes.SCT.Present`` / ``codes.SCT.Absent`` (CID 240/241).
PRESENT = CodedConcept.from_code(codes.SCT.Present)
ABSENT = CodedConcept.from_code(codes.SCT.Absent)

# --- report / procedure / key objects -------------------------------------------------------
#: LN 25056-3, pydicom ``codes.LN.MRIUnspecifiedBodyRegion``, CID 100 Quantitative Diagnostic
#: Imaging Procedure.
PROCEDURE_MR = CodedConcept.from_code(codes.LN.MRIUnspecifiedBodyRegion)
#: DCM 113000 "Of Interest", CID 7010 Key Object Selection Document Title: the title for objects
#: selected for the reader's attention without a narrower purpose. The other CID 7010 titles name
#: an audience or workflow (For Referring Provider, For Teaching, Rejected for Quality Reasons,
#: Diagnosis Input Used, ...) that a device's selection of border slices and results is not.
KOS_TITLE = CodedConcept.from_code(codes.DCM.OfInterest)
#: DCM 123101 "Neighborhood Analysis", CID 7162 (the SEG Segment Algorithm Family): spots are
#: found and read from the pixels around them.
ALGORITHM_FAMILY = CodedConcept.from_code(codes.cid7162.NeighborhoodAnalysis)
FINDING_TYPE_SUMMARY = _private("BP-SUMMARY", "Border-slice phase analysis summary")

# --- private qualitative evaluations --------------------------------------------------------
BORDER_PATTERN = _private("BP-BORDER", "Border slice phase pattern")
UPPER_BORDER_PATTERN = _private("BP-UPPER", "Upper border slice phase pattern")
LOWER_BORDER_PATTERN = _private("BP-LOWER", "Lower border slice phase pattern")
CENTRAL_PATTERN = _private("BP-CENTRAL", "Central slice phase pattern")
PHASE_CONVENTION = _private("BP-CONV", "Phase convention")

PATTERN_MEANINGS = {
    1: "Pattern 1: totally black",
    2: "Pattern 2: totally white",
    3: "Pattern 3: black circle with white core",
    4: "Pattern 4: white circle with black core",
    5: "Pattern 5: heterogeneously black",
    6: "Pattern 6: heterogeneously white",
}
PATTERN_SHORT = {1: "black", 2: "white", 3: "black ring", 4: "white ring", 5: "het. black", 6: "het. white"}
PATTERN_NOT_ASSESSABLE = _private("BP-PAT-NA", "Pattern not assessable")

CONVENTION_CODES = {
    Handedness.RIGHT: _private("BP-CONV-RH", "Right-handed phase (paramagnetic dark)"),
    Handedness.LEFT: _private("BP-CONV-LH", "Left-handed phase (paramagnetic bright)"),
    "unknown": _private("BP-CONV-UNK", "Phase convention unknown"),
}


def pattern_code(pattern: Optional[int]) -> CodedConcept:
    """The private code of phase pattern 1-6 (or 'not assessable' for None)."""
    if pattern is None:
        return PATTERN_NOT_ASSESSABLE
    p = int(pattern)
    if p not in PATTERN_MEANINGS:
        raise ValueError(f"phase pattern must be 1..6 or None, got {pattern!r}")
    return _private(f"BP-PAT-{p}", PATTERN_MEANINGS[p])


def convention_code(convention: str) -> CodedConcept:
    try:
        return CONVENTION_CODES[convention]
    except KeyError:
        raise ValueError(
            f"phase convention must be one of {sorted(CONVENTION_CODES)}, got {convention!r}"
        ) from None


def convention_from_code(code: CodedConcept) -> str:
    """Inverse of :func:`convention_code`."""
    for name, c in CONVENTION_CODES.items():
        if c.value == code.value:
            return name
    raise ValueError(f"not a phase convention code: {code.value}")


def pattern_from_code(code: CodedConcept) -> Optional[int]:
    """Inverse of :func:`pattern_code` (for reading an SR back)."""
    if code.value == PATTERN_NOT_ASSESSABLE.value:
        return None
    return int(code.value.rsplit("-", 1)[1])


def class_from_finding(code: CodedConcept) -> Finding:
    """Inverse of :data:`FINDING_BY_CLASS` (for reading an SR or SEG back)."""
    for cls, c in FINDING_BY_CLASS.items():
        if c.value == code.value and c.scheme_designator == code.scheme_designator:
            return cls
    raise ValueError(f"not a borderphase finding code: {code.value} ({code.scheme_designator})")


# --- SR (issue 13): study-level qualitative evaluations, class-bearing certainty, texts ----------
#: TID 1500 row 12: the report-level "Qualitative Evaluations" container.
QUALITATIVE_EVALUATIONS = CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
#: The certainty of each spot's call, named after the class (the only per-spot text OHIF shows
#: is the concept name of each NUM, so the class must be in it).
CERTAINTY_BY_CLASS: dict[Finding, CodedConcept] = {
    Finding.MICROBLEED: _private("BP-CERT-CMB", "Microbleed certainty"),
    Finding.CALCIFICATION: _private("BP-CERT-CALC", "Calcification certainty"),
    Finding.INDETERMINATE: _private("BP-CERT-INDET", "Indeterminate spot certainty"),
}
CLASSIFICATION_TEXT = _private("BP-CLASS", "Classification")
REASON_TEXT = _private("BP-REASON", "Reason for the classification")
EVIDENCE_TEXT = _private("BP-EVIDENCE", "Method evidence")
REGION_SHOWN_TEXT = _private("BP-REGION", "Region shown")
DISCLAIMER_TEXT = _private("BP-DISCLAIMER", "Disclaimer")
INTENDED_USE_TEXT = _private("BP-INTENDED-USE", "Intended use")
#: The check of the header's phase convention against the data (issue 12): confirmed, not
#: confirmed, or "HEADER CONTRADICTED ..." with what contradicted it.
CONVENTION_CHECK_TEXT = _private("BP-CONV-CHECK", "Phase convention check against the data")
#: What about the input images limits the reading (a lossy-compressed magnitude), one item per warning.
INPUT_WARNING_TEXT = _private("BP-INPUT-WARN", "Input image warning")


# --- what OHIF's measurement panel reads (issue 13) ---
AREA = CodedConcept.from_code(codes.SCT.Area)                       # SCT 42798000, pydicom's dictionary
UNIT_MM2 = CodedConcept("mm2", "UCUM", "square millimeter")
COMMENT = CodedConcept.from_code(codes.DCM.Comment)                 # DCM 121106: the spot's name as a label


# --- QSM (issue 11) ---
#: DCM 126396 "Magnetic Susceptibility", pydicom ``codes.DCM.MagneticSusceptibility`` (PS3.16
#: CID 7180 Abstract Multi-dimensional Image Model Component Semantics, units ppm).
MAGNETIC_SUSCEPTIBILITY = CodedConcept.from_code(codes.DCM.MagneticSusceptibility)
#: UCUM "[ppm]" (parts per million, the unit CID 7180 names for DCM 126396).
UNIT_PPM = CodedConcept("[ppm]", "UCUM", "parts per million")
#: The spot's QSM reading in words: chi, its 95 % interval, the reference and the sign call.
QSM_READING_TEXT = _private("BP-QSM", "QSM reading")
