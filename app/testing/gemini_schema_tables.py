"""Google's `GenerateContentRequest` proto (and the embedding requests), described as data, for the fake's validator.

Owns: every message the fake accepts in a generateContent or embedding body (message -> field ->
kind, referenced message or enum, repeated?, oneof group, backend), the enums with
their values and proto names, and the lookup maps built from them once at import.

Sources: googleapis `google/ai/generativelanguage/v1beta/{content,generative_service}.proto`,
the google-genai 3.4.0 types and `_to_mldev` / `_to_vertex` converters (which fields
each backend takes), and docs/gemini-facts.md#request. A test checks the
field names and enum values against `google.genai.types`.

Kinds: proto scalars (`string`, `bytes`, `bool`, `int32`, `int64`, `float`, `double`,
`enum`), `message`, `map` (string keys -> `ref` message, or `string` values when
`ref` is empty), `struct` (google.protobuf.Struct: a JSON object), `value`
(google.protobuf.Value: any JSON), `duration` / `timestamp` (well-known types written
as strings), and `object`: a message the fake accepts as any JSON object without
looking inside (server-side tool configs it never acts on).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal, NamedTuple

Backend = Literal["gemini", "vertex"]
BACKENDS: tuple[Backend, ...] = ("gemini", "vertex")

PACKAGES: Mapping[Backend, str] = {
    "gemini": "google.ai.generativelanguage.v1beta",
    "vertex": "google.cloud.aiplatform.v1beta1",
}


class Field(NamedTuple):
    kind: str
    ref: str = ""  # message name (message, map, object) or enum name (enum)
    repeated: bool = False
    oneof: str = ""
    only: Backend | None = None  # None: both backends


def _f(kind: str, ref: str = "", *, rep: bool = False, oneof: str = "", only: Backend | None = None) -> Field:
    return Field(kind, ref, rep, oneof, only)


def _m(ref: str, *, rep: bool = False, oneof: str = "", only: Backend | None = None) -> Field:
    return Field("message", ref, rep, oneof, only)


def _e(ref: str, *, rep: bool = False, oneof: str = "", only: Backend | None = None) -> Field:
    return Field("enum", ref, rep, oneof, only)


def _obj(ref: str, *, rep: bool = False, only: Backend | None = None) -> Field:
    return Field("object", ref, rep, "", only)


S, B, BOOL = _f("string"), _f("bytes"), _f("bool")
I32, I64, FLOAT, DOUBLE = _f("int32"), _f("int64"), _f("float"), _f("double")
STRUCT, VALUE = _f("struct"), _f("value")
STRINGS = _f("string", rep=True)

GEMINI: Backend = "gemini"
VERTEX: Backend = "vertex"

MESSAGES: Mapping[str, Mapping[str, Field]] = {
    "GenerateContentRequest": {
        "model": S,
        "contents": _m("Content", rep=True),
        "systemInstruction": _m("Content"),
        "tools": _m("Tool", rep=True),
        "toolConfig": _m("ToolConfig"),
        "safetySettings": _m("SafetySetting", rep=True),
        "generationConfig": _m("GenerationConfig"),
        "cachedContent": S,
        "serviceTier": _e("ServiceTier"),
        "continuationToken": S,
        "store": _f("bool", only=GEMINI),
        "labels": _f("map", only=VERTEX),
        "modelArmorConfig": _obj("ModelArmorConfig", only=VERTEX),
        "outputConfig": _obj("GenerationOutputConfig", only=VERTEX),
    },
    "Content": {"parts": _m("Part", rep=True), "role": S},
    "Part": {
        "text": _f("string", oneof="data"),
        "inlineData": _m("Blob", oneof="data"),
        "fileData": _m("FileData", oneof="data"),
        "functionCall": _m("FunctionCall", oneof="data"),
        "functionResponse": _m("FunctionResponse", oneof="data"),
        "executableCode": _m("ExecutableCode", oneof="data"),
        "codeExecutionResult": _m("CodeExecutionResult", oneof="data"),
        "toolCall": _m("ToolCall", oneof="data", only=GEMINI),
        "toolResponse": _m("ToolResponse", oneof="data", only=GEMINI),
        "thought": BOOL,
        "thoughtSignature": B,
        "videoMetadata": _m("VideoMetadata"),
        "mediaResolution": _m("PartMediaResolution"),
        "partMetadata": _f("struct", only=GEMINI),
    },
    "Blob": {"mimeType": S, "data": B, "displayName": S},
    "FileData": {"mimeType": S, "fileUri": S, "displayName": S},
    "FunctionCall": {
        "id": S,
        "name": S,
        "args": STRUCT,
        "partialArgs": _m("PartialArg", rep=True, only=VERTEX),
        "willContinue": _f("bool", only=VERTEX),
    },
    "PartialArg": {
        "jsonPath": S,
        "nullValue": _e("NullValue", oneof="delta"),
        "numberValue": _f("double", oneof="delta"),
        "stringValue": _f("string", oneof="delta"),
        "boolValue": _f("bool", oneof="delta"),
        "willContinue": BOOL,
    },
    "FunctionResponse": {
        "id": S,
        "name": S,
        "response": STRUCT,
        "parts": _m("FunctionResponsePart", rep=True),
        "willContinue": _f("bool", only=GEMINI),
        "scheduling": _e("FunctionResponseScheduling"),
    },
    "FunctionResponsePart": {
        "inlineData": _m("FunctionResponseBlob", oneof="data"),
        "fileData": _m("FunctionResponseFileData", oneof="data"),
    },
    "FunctionResponseBlob": {"mimeType": S, "data": B, "displayName": S},
    "FunctionResponseFileData": {"mimeType": S, "fileUri": S, "displayName": S},
    "ExecutableCode": {"language": _e("Language"), "code": S, "id": S},
    "CodeExecutionResult": {"outcome": _e("Outcome"), "output": S, "id": S},
    "VideoMetadata": {"startOffset": _f("duration"), "endOffset": _f("duration"), "fps": DOUBLE},
    "PartMediaResolution": {"level": _e("PartMediaResolutionLevel"), "numTokens": I32},
    "ToolCall": {"id": S, "toolType": _e("ToolType"), "args": STRUCT},
    "ToolResponse": {"id": S, "toolType": _e("ToolType"), "response": STRUCT},
    "Tool": {
        "functionDeclarations": _m("FunctionDeclaration", rep=True),
        "googleSearchRetrieval": _m("GoogleSearchRetrieval"),
        "codeExecution": _m("CodeExecution"),
        "googleSearch": _m("GoogleSearch"),
        "urlContext": _m("UrlContext"),
        "googleMaps": _m("GoogleMaps"),
        "computerUse": _m("ComputerUse"),
        "fileSearch": _m("FileSearch", only=GEMINI),
        "mcpServers": _obj("McpServer", rep=True, only=GEMINI),
        "retrieval": _obj("Retrieval", only=VERTEX),
        "enterpriseWebSearch": _m("EnterpriseWebSearch", only=VERTEX),
        "parallelAiSearch": _obj("ParallelAiSearch", only=VERTEX),
        "exaAiSearch": _obj("ExaAiSearch", only=VERTEX),
    },
    "CodeExecution": {},
    "UrlContext": {},
    "GoogleSearch": {
        "searchTypes": _m("SearchTypes", only=GEMINI),
        "timeRangeFilter": _m("Interval", only=GEMINI),
        "excludeDomains": _f("string", rep=True, only=VERTEX),
        "blockingConfidence": _e("PhishBlockThreshold", only=VERTEX),
    },
    "SearchTypes": {"webSearch": _obj("WebSearch"), "imageSearch": _obj("ImageSearch")},
    "Interval": {"startTime": _f("timestamp"), "endTime": _f("timestamp")},
    "GoogleSearchRetrieval": {"dynamicRetrievalConfig": _m("DynamicRetrievalConfig")},
    "DynamicRetrievalConfig": {"mode": _e("DynamicRetrievalMode"), "dynamicThreshold": FLOAT},
    "GoogleMaps": {
        "enableWidget": BOOL,
        "authConfig": _obj("AuthConfig"),
        "groundingTypes": _obj("GoogleMapsGroundingTypes", only=VERTEX),
    },
    "ComputerUse": {
        "environment": _e("Environment"),
        "excludedPredefinedFunctions": STRINGS,
        "enablePromptInjectionDetection": BOOL,
        "disabledSafetyPolicies": _e("SafetyPolicy", rep=True),
    },
    "FileSearch": {"fileSearchStoreNames": STRINGS, "topK": I32, "metadataFilter": S},
    "EnterpriseWebSearch": {"excludeDomains": STRINGS, "blockingConfidence": _e("PhishBlockThreshold")},
    "FunctionDeclaration": {
        "name": S,
        "description": S,
        "parameters": _m("Schema"),
        "parametersJsonSchema": VALUE,
        "response": _m("Schema"),
        "responseJsonSchema": VALUE,
        "behavior": _e("Behavior"),
    },
    "Schema": {
        "type": _e("Type"),
        "format": S,
        "title": S,
        "description": S,
        "nullable": BOOL,
        "enum": STRINGS,
        "items": _m("Schema"),
        "minItems": I64,
        "maxItems": I64,
        "minLength": I64,
        "maxLength": I64,
        "pattern": S,
        "minimum": DOUBLE,
        "maximum": DOUBLE,
        "properties": _f("map", "Schema"),
        "required": STRINGS,
        "minProperties": I64,
        "maxProperties": I64,
        "propertyOrdering": STRINGS,
        "anyOf": _m("Schema", rep=True),
        "default": VALUE,
        "example": VALUE,
        "additionalProperties": _f("value", only=VERTEX),
        "defs": _f("map", "Schema", only=VERTEX),
        "ref": _f("string", only=VERTEX),
    },
    "ToolConfig": {
        "functionCallingConfig": _m("FunctionCallingConfig"),
        "retrievalConfig": _m("RetrievalConfig"),
        "includeServerSideToolInvocations": _f("bool", only=GEMINI),
    },
    "FunctionCallingConfig": {
        "mode": _e("FunctionCallingMode"),
        "allowedFunctionNames": STRINGS,
        "streamFunctionCallArguments": _f("bool", only=VERTEX),
    },
    "RetrievalConfig": {"latLng": _m("LatLng"), "languageCode": S},
    "LatLng": {"latitude": DOUBLE, "longitude": DOUBLE},
    "SafetySetting": {
        "category": _e("HarmCategory"),
        "threshold": _e("HarmBlockThreshold"),
        "method": _e("HarmBlockMethod", only=VERTEX),
    },
    "GenerationConfig": {
        "candidateCount": I32,
        "stopSequences": STRINGS,
        "maxOutputTokens": I32,
        "temperature": FLOAT,
        "topP": FLOAT,
        "topK": I32,  # a float on Vertex: VERTEX_KIND_OVERRIDES
        "seed": I32,
        "responseMimeType": S,
        "responseSchema": _m("Schema"),
        "responseJsonSchema": VALUE,
        "presencePenalty": FLOAT,
        "frequencyPenalty": FLOAT,
        "responseLogprobs": BOOL,
        "logprobs": I32,
        "responseModalities": _e("Modality", rep=True),
        "mediaResolution": _e("MediaResolution"),
        "speechConfig": _m("SpeechConfig"),
        "thinkingConfig": _m("ThinkingConfig"),
        "imageConfig": _m("ImageConfig"),
        "audioTranscriptionConfig": _obj("AudioTranscriptionConfig"),
        "enableEnhancedCivicAnswers": _f("bool", only=GEMINI),
        "audioTimestamp": _f("bool", only=VERTEX),
        "enableAffectiveDialog": _f("bool", only=VERTEX),
        "routingConfig": _obj("RoutingConfig", only=VERTEX),
        "modelSelectionConfig": _obj("ModelSelectionConfig", only=VERTEX),
        "responseFormat": _obj("ResponseFormat", rep=True, only=VERTEX),
    },
    "ThinkingConfig": {"includeThoughts": BOOL, "thinkingBudget": I32, "thinkingLevel": _e("ThinkingLevel")},
    "SpeechConfig": {
        "voiceConfig": _m("VoiceConfig"),
        "multiSpeakerVoiceConfig": _m("MultiSpeakerVoiceConfig"),
        "languageCode": S,
    },
    "VoiceConfig": {
        "prebuiltVoiceConfig": _m("PrebuiltVoiceConfig"),
        "replicatedVoiceConfig": _obj("ReplicatedVoiceConfig"),
    },
    "PrebuiltVoiceConfig": {"voiceName": S},
    "MultiSpeakerVoiceConfig": {"speakerVoiceConfigs": _m("SpeakerVoiceConfig", rep=True)},
    "SpeakerVoiceConfig": {"speaker": S, "voiceConfig": _m("VoiceConfig")},
    "ImageConfig": {
        "aspectRatio": S,
        "imageSize": S,
        "personGeneration": _f("string", only=VERTEX),
        "prominentPeople": _e("ProminentPeople", only=VERTEX),
        "outputMimeType": _f("string", only=VERTEX),
        "outputCompressionQuality": _f("int32", only=VERTEX),
        "imageOutputOptions": _obj("ImageOutputOptions", only=VERTEX),
    },
}

# Embedding requests (docs/gemini-facts.md#embeddings). The Gemini API takes the options at the top
# of each request (google-genai's `_EmbedContentConfig_to_mldev`); Vertex AI inside
# `embedContentConfig` (`_EmbedContentConfig_to_vertex`), and `:predict` free-form `instances`.
EMBEDDING_MESSAGES: Mapping[str, Mapping[str, Field]] = {
    "EmbedContentRequest": {
        "model": S,
        "content": _m("Content"),
        "taskType": _e("TaskType", only=GEMINI),
        "title": _f("string", only=GEMINI),
        "outputDimensionality": _f("int32", only=GEMINI),
        "embedContentConfig": _m("EmbedContentConfig", only=VERTEX),
    },
    "BatchEmbedContentsRequest": {"requests": _m("EmbedContentRequest", rep=True)},
    "EmbedContentConfig": {
        "taskType": _e("TaskType"),
        "title": S,
        "outputDimensionality": I32,
        "autoTruncate": BOOL,
        "documentOcr": BOOL,
        "audioTrackExtraction": BOOL,
    },
    "PredictRequest": {"instances": _f("value", rep=True), "parameters": VALUE},
}
MESSAGES = {**MESSAGES, **EMBEDDING_MESSAGES}

VERTEX_KIND_OVERRIDES: Mapping[tuple[str, str], Field] = {("GenerationConfig", "topK"): FLOAT}

# Proto names where they differ from the table's name (error texts name the type).
MESSAGE_PROTO_NAMES: Mapping[str, str] = {
    "GoogleSearch": "Tool.GoogleSearch",
    "PartMediaResolution": "Part.MediaResolution",
}

ENUMS: Mapping[str, tuple[str, ...]] = {
    "Type": ("TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"),
    "HarmCategory": (
        "HARM_CATEGORY_UNSPECIFIED",
        "HARM_CATEGORY_HARASSMENT",
        "HARM_CATEGORY_HATE_SPEECH",
        "HARM_CATEGORY_SEXUALLY_EXPLICIT",
        "HARM_CATEGORY_DANGEROUS_CONTENT",
        "HARM_CATEGORY_CIVIC_INTEGRITY",
        "HARM_CATEGORY_JAILBREAK",
        "HARM_CATEGORY_IMAGE_HATE",
        "HARM_CATEGORY_IMAGE_DANGEROUS_CONTENT",
        "HARM_CATEGORY_IMAGE_HARASSMENT",
        "HARM_CATEGORY_IMAGE_SEXUALLY_EXPLICIT",
    ),
    "HarmBlockThreshold": (
        "HARM_BLOCK_THRESHOLD_UNSPECIFIED",
        "BLOCK_LOW_AND_ABOVE",
        "BLOCK_MEDIUM_AND_ABOVE",
        "BLOCK_ONLY_HIGH",
        "BLOCK_NONE",
        "OFF",
    ),
    "HarmBlockMethod": ("HARM_BLOCK_METHOD_UNSPECIFIED", "SEVERITY", "PROBABILITY"),
    "FunctionCallingMode": ("MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"),
    "ThinkingLevel": ("THINKING_LEVEL_UNSPECIFIED", "MINIMAL", "LOW", "MEDIUM", "HIGH", "XHIGH"),
    "MediaResolution": (
        "MEDIA_RESOLUTION_UNSPECIFIED",
        "MEDIA_RESOLUTION_LOW",
        "MEDIA_RESOLUTION_MEDIUM",
        "MEDIA_RESOLUTION_HIGH",
    ),
    "PartMediaResolutionLevel": (
        "MEDIA_RESOLUTION_UNSPECIFIED",
        "MEDIA_RESOLUTION_LOW",
        "MEDIA_RESOLUTION_MEDIUM",
        "MEDIA_RESOLUTION_HIGH",
        "MEDIA_RESOLUTION_ULTRA_HIGH",
    ),
    "Modality": ("MODALITY_UNSPECIFIED", "TEXT", "IMAGE", "AUDIO", "VIDEO"),
    "Language": ("LANGUAGE_UNSPECIFIED", "PYTHON"),
    "Outcome": ("OUTCOME_UNSPECIFIED", "OUTCOME_OK", "OUTCOME_FAILED", "OUTCOME_DEADLINE_EXCEEDED"),
    "Behavior": ("UNSPECIFIED", "BLOCKING", "NON_BLOCKING"),
    "FunctionResponseScheduling": ("SCHEDULING_UNSPECIFIED", "SILENT", "WHEN_IDLE", "INTERRUPT"),
    "DynamicRetrievalMode": ("MODE_UNSPECIFIED", "MODE_DYNAMIC"),
    "Environment": ("ENVIRONMENT_UNSPECIFIED", "ENVIRONMENT_BROWSER", "ENVIRONMENT_MOBILE", "ENVIRONMENT_DESKTOP"),
    "SafetyPolicy": (
        "SAFETY_POLICY_UNSPECIFIED",
        "FINANCIAL_TRANSACTIONS",
        "SENSITIVE_DATA_MODIFICATION",
        "COMMUNICATION_TOOL",
        "ACCOUNT_CREATION",
        "DATA_MODIFICATION",
        "USER_CONSENT_MANAGEMENT",
        "LEGAL_TERMS_AND_AGREEMENTS",
    ),
    "PhishBlockThreshold": (
        "PHISH_BLOCK_THRESHOLD_UNSPECIFIED",
        "BLOCK_LOW_AND_ABOVE",
        "BLOCK_MEDIUM_AND_ABOVE",
        "BLOCK_HIGH_AND_ABOVE",
        "BLOCK_HIGHER_AND_ABOVE",
        "BLOCK_VERY_HIGH_AND_ABOVE",
        "BLOCK_ONLY_EXTREMELY_HIGH",
    ),
    "ToolType": (
        "TOOL_TYPE_UNSPECIFIED",
        "GOOGLE_SEARCH_WEB",
        "GOOGLE_SEARCH_IMAGE",
        "URL_CONTEXT",
        "GOOGLE_MAPS",
        "FILE_SEARCH",
        "MEDIA_PROCESSING",
    ),
    # The SDK sends "flex" etc.; the parser upper-cases enum strings, so these are the proto names.
    "ServiceTier": ("UNSPECIFIED", "FLEX", "STANDARD", "PRIORITY"),
    "ProminentPeople": ("PROMINENT_PEOPLE_UNSPECIFIED", "ALLOW_PROMINENT_PEOPLE", "BLOCK_PROMINENT_PEOPLE"),
    "NullValue": ("NULL_VALUE",),
    "TaskType": (
        "TASK_TYPE_UNSPECIFIED",
        "RETRIEVAL_QUERY",
        "RETRIEVAL_DOCUMENT",
        "SEMANTIC_SIMILARITY",
        "CLASSIFICATION",
        "CLUSTERING",
        "QUESTION_ANSWERING",
        "FACT_VERIFICATION",
        "CODE_RETRIEVAL_QUERY",
    ),
}

# Enum values one backend does not have (docs/gemini-facts.md#request: the IMAGE_* categories are Vertex only).
ENUM_VALUE_ONLY: Mapping[tuple[str, str], Backend] = {
    ("HarmCategory", "HARM_CATEGORY_IMAGE_HATE"): "vertex",
    ("HarmCategory", "HARM_CATEGORY_IMAGE_DANGEROUS_CONTENT"): "vertex",
    ("HarmCategory", "HARM_CATEGORY_IMAGE_HARASSMENT"): "vertex",
    ("HarmCategory", "HARM_CATEGORY_IMAGE_SEXUALLY_EXPLICIT"): "vertex",
}

# Proto names of the enums (nested ones carry their parent), as `Invalid value` texts show them.
ENUM_PROTO_NAMES: Mapping[str, str] = {
    "HarmBlockThreshold": "SafetySetting.HarmBlockThreshold",
    "HarmBlockMethod": "SafetySetting.HarmBlockMethod",
    "FunctionCallingMode": "FunctionCallingConfig.Mode",
    "ThinkingLevel": "ThinkingConfig.ThinkingLevel",
    "MediaResolution": "GenerationConfig.MediaResolution",
    "PartMediaResolutionLevel": "Part.MediaResolution.Level",
    "Modality": "GenerationConfig.Modality",
    "Language": "ExecutableCode.Language",
    "Outcome": "CodeExecutionResult.Outcome",
    "Behavior": "FunctionDeclaration.Behavior",
    "FunctionResponseScheduling": "FunctionResponse.Scheduling",
    "DynamicRetrievalMode": "DynamicRetrievalConfig.Mode",
    "Environment": "Tool.ComputerUse.Environment",
    "SafetyPolicy": "Tool.ComputerUse.SafetyPolicy",
    "PhishBlockThreshold": "Tool.PhishBlockThreshold",
    "ProminentPeople": "ImageConfig.ProminentPeople",
    "NullValue": "google.protobuf.NullValue",
}

WELL_KNOWN_TYPES: Mapping[str, str] = {
    "struct": "type.googleapis.com/google.protobuf.Struct",
    "duration": "type.googleapis.com/google.protobuf.Duration",
    "timestamp": "type.googleapis.com/google.protobuf.Timestamp",
}

SCALAR_TYPE_NAMES: Mapping[str, str] = {
    "string": "TYPE_STRING",
    "bytes": "TYPE_BYTES",
    "bool": "TYPE_BOOL",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float": "TYPE_FLOAT",
    "double": "TYPE_DOUBLE",
}


class FieldInfo(NamedTuple):
    camel: str
    snake: str
    field: Field


_CAMEL_BOUNDARY = re.compile(r"(?<!^)(?=[A-Z])")


def to_snake(camel: str) -> str:
    return _CAMEL_BOUNDARY.sub("_", camel).lower()


def _build_field_maps() -> dict[Backend, dict[str, dict[str, FieldInfo]]]:
    maps: dict[Backend, dict[str, dict[str, FieldInfo]]] = {}
    for backend in BACKENDS:
        per_message: dict[str, dict[str, FieldInfo]] = {}
        for message, fields in MESSAGES.items():
            names: dict[str, FieldInfo] = {}
            for camel, field in fields.items():
                if field.only not in (None, backend):
                    continue
                if backend == "vertex":
                    field = VERTEX_KIND_OVERRIDES.get((message, camel), field)
                info = FieldInfo(camel, to_snake(camel), field)
                names[camel] = info
                names[info.snake] = info
            per_message[message] = names
        maps[backend] = per_message
    return maps


def _build_enum_maps() -> dict[Backend, dict[str, tuple[str, ...]]]:
    return {
        backend: {
            name: tuple(v for v in values if ENUM_VALUE_ONLY.get((name, v), backend) == backend)
            for name, values in ENUMS.items()
        }
        for backend in BACKENDS
    }


def _type_url(backend: Backend, proto_name: str) -> str:
    if proto_name.startswith("google.protobuf."):
        return f"type.googleapis.com/{proto_name}"
    return f"type.googleapis.com/{PACKAGES[backend]}.{proto_name}"


FIELD_MAPS = _build_field_maps()
ENUM_VALUES = _build_enum_maps()
ENUM_TYPE_URLS: Mapping[Backend, Mapping[str, str]] = {
    b: {name: _type_url(b, ENUM_PROTO_NAMES.get(name, name)) for name in ENUMS} for b in BACKENDS
}
MESSAGE_TYPE_URLS: Mapping[Backend, Mapping[str, str]] = {
    b: {
        ref: _type_url(b, MESSAGE_PROTO_NAMES.get(ref, ref))
        for ref in {*MESSAGES, *(f.ref for fs in MESSAGES.values() for f in fs.values() if f.kind == "object")}
    }
    for b in BACKENDS
}
