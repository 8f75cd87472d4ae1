"""The seven HAM10000 diagnoses, in the one order every part of hamdata uses.

Class indices are positions in ``CLASSES`` (alphabetical, as in the HAM10000
``dx`` column), never whatever order a dataframe happens to produce.
"""

CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")

CLASS_NAMES = {
    "akiec": "Actinic keratoses / intraepithelial carcinoma",
    "bcc": "Basal cell carcinoma",
    "bkl": "Benign keratosis-like lesions",
    "df": "Dermatofibroma",
    "mel": "Melanoma",
    "nv": "Melanocytic nevi",
    "vasc": "Vascular lesions",
}

# Column order of the ISIC 2018 Task 3 ground truth and prediction files.
ISIC2018_COLUMNS = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")

CLASS_INDEX = {dx: i for i, dx in enumerate(CLASSES)}


def label_of(dx: str) -> int:
    """Class index of a diagnosis code; KeyError for an unknown code."""
    return CLASS_INDEX[dx]


def isic_column(dx: str) -> str:
    """ISIC 2018 column name of a diagnosis code (``"nv"`` -> ``"NV"``)."""
    return dx.upper()
