"""Review data: loaders, splits, overlap checks. Knows nothing of the model."""

from kgemma.data.imdb import default_imdb_source
from kgemma.data.imdb import is_single_file
from kgemma.data.imdb import load_imdb
from kgemma.data.overlap import drop_overlap
from kgemma.data.overlap import duplicate_groups
from kgemma.data.overlap import normalize_text
from kgemma.data.overlap import overlap_report
from kgemma.data.overlap import overlapping_indices
from kgemma.data.readers import parse_label
from kgemma.data.readers import read_aclimdb
from kgemma.data.readers import read_csv
from kgemma.data.readers import read_jsonl
from kgemma.data.readers import read_reviews
from kgemma.data.reviews import Reviews
from kgemma.data.splits import stratified_sample
from kgemma.data.splits import train_validation_split
