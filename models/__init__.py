"""Generators on the shared transformer (installed as ``mmgen.models``)."""
from mmgen.models.base import Condition, Generator, GeneratorConfig, tokenizer_overrides
from mmgen.models.nbp import NBPConfig, NBPGenerator
from mmgen.models.rar import RARConfig, RARGenerator
from mmgen.models.raster import RasterConfig, RasterGenerator
from mmgen.models.unified import TaskBatch, UnifiedConfig, UnifiedGenerator
from mmgen.models.var import VARConfig, VARGenerator
from mmgen.models.xar import XARConfig, XARGenerator

__all__ = ["Condition", "Generator", "GeneratorConfig", "tokenizer_overrides", "RasterGenerator", "RasterConfig", "VARGenerator", "VARConfig",
           "RARGenerator", "RARConfig", "XARGenerator", "XARConfig", "NBPGenerator", "NBPConfig", "UnifiedGenerator", "UnifiedConfig", "TaskBatch"]
