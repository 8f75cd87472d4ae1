"""The real distributions and vocabularies that hamdata.synth.isic draws from: ISIC 2019 Task 1's class
counts, image shapes, sites and sexes; the ISIC archive's diagnosis taxonomy, attributions and id habits; and
how a HAM10000 image's label, site and confirmation read in each layout's words. Constants only."""

from __future__ import annotations

# The real ISIC 2019 Task 1 training set (25,331 images). Shapes: HAM10000's and BCN20000's exact, MSK's approximate.
REAL_ISIC2019_COUNTS = {"mel": 4522, "nv": 12875, "bcc": 3323, "ak": 867, "bkl": 2624, "df": 239, "vasc": 253,
                        "scc": 628}
ISIC2019_SHAPES = {(1024, 1024): 12413, (600, 450): 10015, (1024, 768): 1900, (1024, 683): 600, (768, 1024): 250,
                   (683, 1024): 153}
SITES = {"anterior torso": 6915, "lower extremity": 4990, "head/neck": 4587, "upper extremity": 2910,
         "posterior torso": 2787, "palms/soles": 398, "oral/genital": 59, "lateral torso": 54, "": 2631}
SEXES = {"male": 13286, "female": 11661, "": 384}
AGE_MISSING = 437 / 25331
HAM10000_NUMBERS = range(24306, 34321)  # the real HAM10000 images are ISIC_0024306 .. ISIC_0034320
NO_LESION_ID = 1 / 3  # share of ISIC 2019 images listed without a lesion_id
DOWNSAMPLED = 0.05  # share of ISIC 2019 names with the _downsampled suffix

# The ISIC diagnosis taxonomy (isic-metadata's diagnosis_hierarchical): diagnosis_3 -> (diagnosis_1, diagnosis_2,
# ISIC 2019 class or None). The None rows are labels that no class maps.
_MEL = ("Malignant", "Malignant melanocytic proliferations (Melanoma)")
_SCC = ("Malignant", "Malignant epidermal proliferations")
_BKL = ("Benign", "Benign epidermal proliferations")
_VASC = ("Benign", "Benign soft tissue proliferations - Vascular")
_FIBRO = ("Benign", "Benign soft tissue proliferations - Fibro-histiocytic")
ARCHIVE_TAXONOMY = {
    "Nevus": ("Benign", "Benign melanocytic proliferations", "nv"),
    "Melanoma Invasive": (*_MEL, "mel"), "Melanoma in situ": (*_MEL, "mel"), "Melanoma, NOS": (*_MEL, "mel"),
    "Basal cell carcinoma": ("Malignant", "Malignant adnexal epithelial proliferations - Follicular", "bcc"),
    "Squamous cell carcinoma in situ": (*_SCC, "scc"), "Squamous cell carcinoma, Invasive": (*_SCC, "scc"),
    "Squamous cell carcinoma, NOS": (*_SCC, "scc"),
    "Solar or actinic keratosis": ("Indeterminate", "Indeterminate epidermal proliferations", "ak"),
    "Seborrheic keratosis": (*_BKL, "bkl"), "Solar lentigo": (*_BKL, "bkl"),
    "Pigmented benign keratosis": (*_BKL, "bkl"), "Lichen planus like keratosis": (*_BKL, "bkl"),
    "Dermatofibroma": (*_FIBRO, "df"),
    "Hemangioma": (*_VASC, "vasc"), "Angiokeratoma": (*_VASC, "vasc"), "Pyogenic granuloma": (*_VASC, "vasc"),
    "Scar": (*_FIBRO, None),
    "Verruca": ("Benign", "Inflammatory or infectious diseases", None),
    "Atypical intraepithelial melanocytic proliferation": (
        "Indeterminate", "Indeterminate melanocytic proliferations", None),
}
UNMAPPED = "other"  # the archive's pseudo-class of the labels no class maps
UNMAPPED_SHARE = 0.02
ARCHIVE_DIAGNOSES = {  # class -> diagnosis_3 -> weight
    "mel": {"Melanoma Invasive": 45, "Melanoma in situ": 35, "Melanoma, NOS": 20}, "nv": {"Nevus": 1},
    "bcc": {"Basal cell carcinoma": 1}, "ak": {"Solar or actinic keratosis": 1},
    "bkl": {"Seborrheic keratosis": 45, "Pigmented benign keratosis": 25, "Solar lentigo": 20,
            "Lichen planus like keratosis": 10},
    "df": {"Dermatofibroma": 1}, "vasc": {"Hemangioma": 60, "Angiokeratoma": 20, "Pyogenic granuloma": 20},
    "scc": {"Squamous cell carcinoma in situ": 45, "Squamous cell carcinoma, Invasive": 30,
            "Squamous cell carcinoma, NOS": 25},
    UNMAPPED: {"Scar": 1, "Verruca": 1, "Atypical intraepithelial melanocytic proliferation": 1},
}
ARCHIVE_SHAPES = {(600, 450): 20, (1024, 1024): 20, (1024, 768): 20, (640, 480): 10, (2592, 1936): 10,
                  (4288, 2848): 5, (6000, 4000): 5, (768, 1024): 5, (1936, 2592): 5}
HAM_ATTRIBUTION = "ViDIR Group, Department of Dermatology, Medical University of Vienna"
ATTRIBUTIONS = {  # attribution -> (weight, copyright_license)
    "Department of Dermatology, Hospital Clínic de Barcelona": (40, "CC-BY-NC"),
    "Memorial Sloan Kettering Cancer Center": (30, "CC-0"),
    HAM_ATTRIBUTION: (20, "CC-BY-NC"),
    "Anonymous": (10, "CC-0"),
}
IMAGE_TYPES = {"dermoscopic": 95, "clinical: close-up": 5}
CONFIRM_TYPES = {"histopathology": 55, "serial imaging showing no change": 20, "single image expert consensus": 20,
                 "confocal microscopy with consensus dermoscopy": 2, "": 3}
LESIONS_PER_PATIENT = {1: 60, 2: 20, 3: 10, 4: 5, 5: 3, 6: 2}
NO_IDS = 0.15  # share of archive lesions without lesion_id and patient_id

# A HAM10000 (or ISIC 2019) dx code in each layout's vocabulary, and HAM10000 metadata in ISIC's.
HAM_TO_ISIC2019 = {"akiec": "ak", "ak": "ak", "bcc": "bcc", "bkl": "bkl", "df": "df", "mel": "mel", "nv": "nv",
                   "scc": "scc", "vasc": "vasc"}
HAM_TO_ARCHIVE = {"akiec": "Solar or actinic keratosis", "ak": "Solar or actinic keratosis",
                  "bcc": "Basal cell carcinoma", "bkl": "Pigmented benign keratosis", "df": "Dermatofibroma",
                  "mel": "Melanoma, NOS", "nv": "Nevus", "scc": "Squamous cell carcinoma, NOS", "vasc": "Hemangioma"}
HAM_SITES = {"back": "posterior torso", "chest": "anterior torso", "abdomen": "anterior torso",
             "upper extremity": "upper extremity", "hand": "upper extremity", "lower extremity": "lower extremity",
             "foot": "lower extremity", "acral": "palms/soles", "face": "head/neck", "scalp": "head/neck",
             "ear": "head/neck", "neck": "head/neck", "genital": "oral/genital"}  # others (trunk, unknown): empty
HAM_CONFIRM = {"histo": "histopathology", "follow_up": "serial imaging showing no change",
               "consensus": "single image expert consensus",
               "confocal": "confocal microscopy with consensus dermoscopy"}
# What draws each class: synth's painters, SCC as AK with keratin and vessels on top.
PAINTERS = {"ak": "akiec", "bcc": "bcc", "bkl": "bkl", "df": "df", "mel": "mel", "nv": "nv", "scc": "akiec",
            "vasc": "vasc", "Scar": "df", "Verruca": "bkl", "Atypical intraepithelial melanocytic proliferation": "nv"}
