"""Azure profiles of the emulators: which reading of an uncertain service behaviour they play.

Where the public contract is unsure (see issue 18 and `reference/customvision.md` §8), the client and the
emulators were built from the same notes, so both could be wrong together. A profile fixes each such
behaviour to one reading, chosen at start-up (`python -m devstack up --profile strict`, the emulators'
`--profile` flag, or the `profile` field of their configs):

- ``default``: the documented reading, as the emulators always behaved.
- ``strict``: the stricter reading users of the real services report, for every uncertain behaviour:

  ===============================  =======================================  ===========================================
  behaviour                        default                                  strict
  ===============================  =======================================  ===========================================
  a batch of only duplicates       207, every entry OKDuplicate             400 BadRequestImageBatch "No valid image
                                                                            files", nothing changes
                                                                            (azure-sdk-for-python #17734)
  an OKDuplicate entry             carries the existing ``image``           ``"image": null``
  largest side                     10,240 px                                10,000 px (MicrosoftDocs/azure-docs #117855)
  largest upload                   6 MiB (6,291,456 bytes)                  6,000,000 bytes
  timestamps (created, ...)        ISO-8601 UTC with ``Z``                  no timezone (naive datetimes in the SDK)
  429 answers                      ``Retry-After`` header                   no ``Retry-After``
  F0 image uploads                 the tier's 10 calls/s                    2 calls/s
  an empty metadata value          accepted                                 400 BadRequestImageMetadataValue
  MM: an expired bearer token      401                                      403
  MM: an unknown model version     404                                      ``unknown_version``: "200-text" (a 200
                                                                            text/plain error, the default) or "404"
  ===============================  =======================================  ===========================================
"""

from __future__ import annotations

from dataclasses import dataclass, replace

PROFILE_NAMES = ("default", "strict")
UNKNOWN_VERSION_ANSWERS = ("404", "200-text")


@dataclass(frozen=True)
class AzureProfile:
    name: str
    # Custom Vision Training API
    refuse_duplicate_only_batch: bool = False  # 400 "No valid image files" when every entry is a duplicate
    duplicate_carries_image: bool = True  # OKDuplicate entries carry the existing image
    max_image_side: int = 10_240  # Limits and quotas: max image height/width
    max_image_bytes: int = 6 * 1024 * 1024  # spec: "Supports images up to 6MB"
    naive_timestamps: bool = False  # timestamps without a timezone designator
    retry_after_on_429: bool = True  # the gateway's 429 carries Retry-After
    f0_upload_rate_per_second: float | None = None  # image uploads on F0; None: the tier's general rate
    refuse_empty_metadata_value: bool = False  # 400 BadRequestImageMetadataValue for ""
    # Percept MM server
    expired_token_status: int = 401
    unknown_version: str = "404"  # "404" or "200-text"

    def with_unknown_version(self, answer: str | None) -> AzureProfile:
        if answer is None:
            return self
        if answer not in UNKNOWN_VERSION_ANSWERS:
            raise ValueError(f"unknown_version must be one of {UNKNOWN_VERSION_ANSWERS}, not {answer!r}")
        return replace(self, unknown_version=answer)


PROFILES = {
    "default": AzureProfile("default"),
    "strict": AzureProfile(
        "strict",
        refuse_duplicate_only_batch=True,
        duplicate_carries_image=False,
        max_image_side=10_000,
        max_image_bytes=6_000_000,
        naive_timestamps=True,
        retry_after_on_429=False,
        f0_upload_rate_per_second=2.0,
        refuse_empty_metadata_value=True,
        expired_token_status=403,
        unknown_version="200-text",
    ),
}


def get_profile(name: str | AzureProfile | None) -> AzureProfile:
    """The profile of that name ("default" when None); an AzureProfile passes through."""
    if isinstance(name, AzureProfile):
        return name
    key = (name or "default").strip().lower()
    if key not in PROFILES:
        raise ValueError(f"unknown Azure profile {name!r}: use one of {PROFILE_NAMES}")
    return PROFILES[key]
