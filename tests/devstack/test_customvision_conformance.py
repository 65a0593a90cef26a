"""Every emulated operation, driven through the real SDK 3.1.1, answers what the v3.4-preview spec defines.

Bodies are validated with jsonschema against the vendored OpenAPI document: Swagger 2.0 definitions are
converted to JSON Schema (``x-nullable``, ``format: uuid/date-time``), and objects may not carry keys the
spec does not define, so a misspelt camelCase key fails here rather than silently in the SDK.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.cognitiveservices.vision.customvision.training.models import (
    CustomVisionErrorException,
    ImageFileCreateBatch,
    ImageFileCreateEntry,
    ImageRegionCreateEntry,
    ImageTagCreateEntry,
    Project,
    Region,
    Tag,
)
from msrest.pipeline import ClientRawResponse

from devstack.customvision_server import SPEC_PATH, load_routes

from .conftest import (
    GENERAL_CLASSIFICATION,
    GENERAL_DETECTION,
    OPERATIONS,
    SPEC,
    ImageFactory,
    RunningEmulator,
    response_schema,
    validator_for,
)

SHARED_SPEC = Path("/work/shared/specs/customvision-training/v3.4-preview/Training.json")

# The operations of customvision.md §3 plus the ones the brief adds; each must be exercised below.
REQUIRED_OPERATIONS = {
    "GetDomains",
    "GetDomain",
    "GetProjects",
    "CreateProject",
    "GetProject",
    "DeleteProject",
    "UpdateProject",
    "GetTags",
    "CreateTag",
    "GetTag",
    "DeleteTag",
    "UpdateTag",
    "CreateImagesFromFiles",
    "CreateImagesFromData",
    "GetImages",
    "GetImageCount",
    "GetImagesByIds",
    "GetTaggedImages",
    "GetTaggedImageCount",
    "GetUntaggedImages",
    "GetUntaggedImageCount",
    "DeleteImages",
    "UpdateImageMetadata",
    "CreateImageTags",
    "DeleteImageTags",
    "CreateImageRegions",
    "DeleteImageRegions",
    "TrainProject",
    "GetIterations",
    "GetIteration",
    "UpdateIteration",
    "DeleteIteration",
    "PublishIteration",
    "UnpublishIteration",
}


class Conformance:
    """Validates raw responses and remembers which operations were covered."""

    def __init__(self) -> None:
        self.covered: set[str] = set()

    def check(self, operation_id: str, result: ClientRawResponse | requests.Response) -> Any:
        response = result.response if isinstance(result, ClientRawResponse) else result
        schema = response_schema(operation_id, response.status_code)
        if schema is None:
            assert response.content == b"", f"{operation_id} {response.status_code} must have no body"
        else:
            assert response.headers["Content-Type"] == "application/json; charset=utf-8"
            body = response.json()
            errors = sorted(validator_for(schema).iter_errors(body), key=lambda e: list(e.path))
            assert not errors, f"{operation_id} {response.status_code}: " + "; ".join(
                f"{list(e.path)}: {e.message}" for e in errors[:5]
            )
        self.covered.add(operation_id)
        return result.output if isinstance(result, ClientRawResponse) else None

    def check_error(self, operation_id: str, exc: CustomVisionErrorException, status: int, code: str) -> None:
        assert exc.response.status_code == status
        assert exc.error.code == code
        self.check(operation_id, exc.response)


def raises(call: Any, *args: Any, **kwargs: Any) -> CustomVisionErrorException:
    with pytest.raises(CustomVisionErrorException) as info:
        call(*args, **kwargs)
    return info.value


# --- the validator itself -----------------------------------------------------------------------------


def test_validator_rejects_what_the_spec_forbids() -> None:
    tag = validator_for({"$ref": "#/definitions/Tag"})
    good = {
        "id": "9e27bc1b-7ae7-4e3b-a4e5-36153479dc01",
        "name": "a",
        "description": None,
        "type": "Regular",
        "imageCount": 0,
    }
    assert tag.is_valid(good)
    assert not tag.is_valid({**good, "name": None}), "x-nullable: false must reject null"
    assert not tag.is_valid({**good, "id": good["id"].upper()}), "ids are lowercase GUIDs"
    assert not tag.is_valid({**good, "ImageCount": 0}), "undeclared (mis-cased) keys are rejected"
    assert not tag.is_valid({**good, "type": "Special"}), "enums are enforced"
    image = validator_for({"$ref": "#/definitions/Image"})
    assert image.is_valid({"tags": None, "regions": None, "metadata": None, "created": "2017-12-19T15:56:10Z"})
    assert not image.is_valid({"created": "2017-12-19 15:56:10"}), "date-time must be ISO-8601 UTC"


def test_vendored_spec_is_the_published_v34_preview_document() -> None:
    assert SPEC["info"]["version"] == "3.4-preview"
    assert SPEC["basePath"] == "/customvision/v3.4-preview/training"
    assert (SPEC_PATH.parent / "NOTICE.md").read_text().count("MIT") >= 1
    if SHARED_SPEC.exists():  # the team's reference copy exists in development checkouts only
        assert SPEC_PATH.read_bytes() == SHARED_SPEC.read_bytes()


def test_every_spec_operation_is_routed(emu: RunningEmulator) -> None:
    """Unimplemented operations are recognised and refused clearly (501), never a bare 404."""
    routes = load_routes(SPEC)
    assert {r.operation_id for r in routes} == set(OPERATIONS)
    response = requests.post(emu.api("/projects/import?token=x"), headers={"Training-Key": "devstack-training-key"})
    assert response.status_code == 501
    assert response.json()["code"] == "BadRequestOperationNotSupported"
    assert emu.emulator.stats.requests["ImportProject"] == 1


# --- the whole surface through the SDK ----------------------------------------------------------------


def test_every_operation_conforms(emu: RunningEmulator, images: ImageFactory) -> None:
    cv = emu.client()
    c = Conformance()

    domains = c.check("GetDomains", cv.get_domains(raw=True))
    assert {d.type for d in domains} == {"Classification", "ObjectDetection"}
    assert c.check("GetDomain", cv.get_domain(GENERAL_DETECTION, raw=True)).type == "ObjectDetection"
    c.check_error("GetDomain", raises(cv.get_domain, "00000000-0000-0000-0000-000000000000"), 404, "NotFoundDomain")

    # projects
    project = c.check("CreateProject", cv.create_project("Pets", description="cats and dogs", raw=True))
    assert project.settings.domain_id == GENERAL_CLASSIFICATION
    c.check_error("CreateProject", raises(cv.create_project, "pets"), 400, "BadRequestProjectNameNotUnique")
    c.check("GetProjects", cv.get_projects(raw=True))
    c.check("GetProject", cv.get_project(project.id, raw=True))
    c.check_error("GetProject", raises(cv.get_project, "00000000-0000-0000-0000-000000000001"), 404, "NotFoundProject")
    updated = Project(name="Pets v2", description="renamed", settings=project.settings)
    assert c.check("UpdateProject", cv.update_project(project.id, updated, raw=True)).name == "Pets v2"

    # tags
    cat = c.check("CreateTag", cv.create_tag(project.id, "cat", description="felines", raw=True))
    dog = c.check("CreateTag", cv.create_tag(project.id, "dog", raw=True))
    c.check_error("CreateTag", raises(cv.create_tag, project.id, "CAT"), 400, "BadRequestTagNameNotUnique")
    assert len(c.check("GetTags", cv.get_tags(project.id, raw=True))) == 2
    c.check("GetTag", cv.get_tag(project.id, cat.id, raw=True))
    c.check_error("GetTag", raises(cv.get_tag, project.id, project.id), 404, "NotFoundTag")
    renamed = c.check(
        "UpdateTag", cv.update_tag(project.id, dog.id, Tag(name="doggo", description="", type="Regular"), raw=True)
    )
    assert renamed.name == "doggo"

    # images: files batch (200 and 207), multipart
    batch = ImageFileCreateBatch(
        images=[ImageFileCreateEntry(name=f"cat{i}.png", contents=images.png(), tag_ids=[cat.id]) for i in range(5)],
        metadata={"source": "conformance"},
    )
    summary = c.check("CreateImagesFromFiles", cv.create_images_from_files(project.id, batch, raw=True))
    assert summary.is_batch_successful
    first = summary.images[0].image
    again = ImageFileCreateBatch(
        images=[
            ImageFileCreateEntry(name="again.png", contents=batch.images[0].contents),
            ImageFileCreateEntry(name="text.txt", contents=b"not an image"),
        ]
    )
    raw = cv.create_images_from_files(project.id, again, raw=True)
    assert raw.response.status_code == 207
    assert [r.status for r in c.check("CreateImagesFromFiles", raw).images] == ["OKDuplicate", "ErrorImageFormat"]
    c.check_error(
        "CreateImagesFromFiles",
        raises(cv.create_images_from_files, project.id, ImageFileCreateBatch(images=[])),
        400,
        "BadRequestImageBatch",
    )
    dog_ids = []
    for i in range(5):
        upload = io.BytesIO(images.jpeg())
        upload.name = f"dog{i}.jpg"
        result = c.check(
            "CreateImagesFromData", cv.create_images_from_data(project.id, upload, tag_ids=[dog.id], raw=True)
        )
        assert result.images[0].source_url == f'"dog{i}.jpg"'
        dog_ids.append(result.images[0].image.id)
    untagged = c.check("CreateImagesFromData", cv.create_images_from_data(project.id, images.png(), raw=True))
    untagged_id = untagged.images[0].image.id

    # image queries
    assert len(c.check("GetImages", cv.get_images(project.id, take=3, skip=1, raw=True))) == 3
    filtered = c.check("GetImages", cv.get_images(project.id, filter="source eq 'conformance'", raw=True))
    assert len(filtered) == 5 and all(i.metadata == {"source": "conformance"} for i in filtered)
    assert c.check("GetImages", cv.get_images(project.id, tagging_status="Untagged", raw=True))[0].tags is None
    assert c.check("GetImageCount", cv.get_image_count(project.id, raw=True)) == 11
    assert (
        c.check("GetImageCount", cv.get_image_count(project.id, tagging_status="Tagged", tag_ids=[dog.id], raw=True))
        == 5
    )
    assert len(c.check("GetTaggedImages", cv.get_tagged_images(project.id, tag_ids=[cat.id], raw=True))) == 5
    assert c.check("GetTaggedImageCount", cv.get_tagged_image_count(project.id, raw=True)) == 10
    assert len(c.check("GetUntaggedImages", cv.get_untagged_images(project.id, raw=True))) == 1
    assert c.check("GetUntaggedImageCount", cv.get_untagged_image_count(project.id, raw=True)) == 1
    by_id = c.check("GetImagesByIds", cv.get_images_by_ids(project.id, image_ids=[first.id, untagged_id], raw=True))
    assert {i.id for i in by_id} == {first.id, untagged_id}
    c.check_error("GetImages", raises(cv.get_images, project.id, filter="source gt 'x'"), 400, "BadRequest")

    # metadata, image tags
    meta = c.check(
        "UpdateImageMetadata", cv.update_image_metadata(project.id, [first.id], {"camera": "door"}, raw=True)
    )
    assert meta.is_batch_successful and meta.images[0].metadata == {"source": "conformance", "camera": "door"}
    raw = cv.update_image_metadata(project.id, [first.id, project.id], {"camera": "yard"}, raw=True)
    assert raw.response.status_code == 207
    assert [e.status for e in c.check("UpdateImageMetadata", raw).images] == ["OK", "ErrorImageNotFound"]
    entries = [
        ImageTagCreateEntry(image_id=untagged_id, tag_id=dog.id),
        ImageTagCreateEntry(image_id=dog_ids[0], tag_id=dog.id),
    ]
    tagged = c.check("CreateImageTags", cv.create_image_tags(project.id, tags=entries, raw=True))
    assert len(tagged.created) == 1 and len(tagged.duplicated) == 1 and tagged.exceeded is None
    c.check("DeleteImageTags", cv.delete_image_tags(project.id, [untagged_id], [dog.id], raw=True))

    # training and iterations
    iteration = c.check("TrainProject", cv.train_project(project.id, raw=True))
    assert iteration.status == "Training" and iteration.trained_at is None
    c.check_error("TrainProject", raises(cv.train_project, project.id), 400, "BadRequestTrainingAlreadyInProgress")
    emu.clock.advance(emu.config.training_seconds)
    iterations = c.check("GetIterations", cv.get_iterations(project.id, raw=True))
    assert [i.status for i in iterations] == ["Completed"]
    assert c.check("GetIteration", cv.get_iteration(project.id, iteration.id, raw=True)).trained_at is not None
    c.check_error("GetIteration", raises(cv.get_iteration, project.id, project.id), 404, "NotFoundIteration")
    assert c.check("UpdateIteration", cv.update_iteration(project.id, iteration.id, "Best", raw=True)).name == "Best"
    assert (
        c.check(
            "PublishIteration", cv.publish_iteration(project.id, iteration.id, "model1", "/subscriptions/x", raw=True)
        )
        is True
    )
    c.check_error(
        "DeleteIteration", raises(cv.delete_iteration, project.id, iteration.id), 400, "BadRequestIterationIsPublished"
    )
    c.check("UnpublishIteration", cv.unpublish_iteration(project.id, iteration.id, raw=True))
    c.check("DeleteIteration", cv.delete_iteration(project.id, iteration.id, raw=True))

    # object detection: regions
    od = c.check("CreateProject", cv.create_project("Shelf", domain_id=GENERAL_DETECTION, raw=True))
    assert od.settings.classification_type is None
    can = c.check("CreateTag", cv.create_tag(od.id, "can", raw=True))
    box = Region(tag_id=can.id, left=0.1, top=0.2, width=0.3, height=0.4)
    boxed = c.check(
        "CreateImagesFromFiles",
        cv.create_images_from_files(
            od.id,
            ImageFileCreateBatch(images=[ImageFileCreateEntry(name="shelf.png", contents=images.png(), regions=[box])]),
            raw=True,
        ),
    )
    od_image = boxed.images[0].image
    assert od_image.regions[0].tag_name == "can" and od_image.tags[0].tag_id == can.id
    new_region = ImageRegionCreateEntry(image_id=od_image.id, tag_id=can.id, left=0.5, top=0.5, width=0.25, height=0.25)
    created = c.check("CreateImageRegions", cv.create_image_regions(od.id, regions=[new_region], raw=True))
    assert created.created[0].region_id
    raw = cv.create_image_regions(od.id, regions=[new_region], raw=True)
    assert raw.response.status_code == 207
    assert len(c.check("CreateImageRegions", raw).duplicated) == 1
    c.check_error(
        "CreateImageRegions",
        raises(
            cv.create_image_regions,
            od.id,
            regions=[
                ImageRegionCreateEntry(image_id=od_image.id, tag_id=can.id, left=0.9, top=0.0, width=0.2, height=0.1)
            ],
        ),
        400,
        "BadRequestImageRegions",
    )
    c.check("DeleteImageRegions", cv.delete_image_regions(od.id, [created.created[0].region_id], raw=True))

    # deleting
    raw = cv.delete_images(project.id, image_ids=[untagged_id], raw=True)
    assert raw.response.status_code == 204
    c.check("DeleteImages", raw)
    raw = cv.delete_images(od.id, all_images=True, raw=True)
    assert raw.response.status_code == 202
    c.check("DeleteImages", raw)
    c.check("DeleteTag", cv.delete_tag(project.id, cat.id, raw=True))
    c.check_error("DeleteTag", raises(cv.delete_tag, project.id, cat.id), 404, "NotFoundTag")
    c.check("DeleteProject", cv.delete_project(od.id, raw=True))

    assert c.covered >= REQUIRED_OPERATIONS, f"not exercised: {sorted(REQUIRED_OPERATIONS - c.covered)}"


def test_v33_prefix_and_mixed_case_paths_serve_the_same_api(emu: RunningEmulator, images: ImageFactory) -> None:
    """Clients of Training 3.3 (and ones writing /Training) reach the same projects."""
    cv = emu.client()
    cv.config.base_url = "{Endpoint}/customvision/v3.3/Training"
    project = cv.create_project("Legacy")
    tag = cv.create_tag(project.id, "t")
    summary = cv.create_images_from_files(
        project.id,
        ImageFileCreateBatch(images=[ImageFileCreateEntry(name="a.png", contents=images.png(), tag_ids=[tag.id])]),
    )
    assert summary.is_batch_successful
    assert [p.name for p in emu.client().get_projects()] == ["Legacy"]  # the SDK's own v3.4-preview prefix
    response = requests.get(
        f"{emu.url}/CustomVision/V3.3/TRAINING/Projects/{project.id.upper()}/Tags",
        headers={"training-KEY": "devstack-training-key"},
    )
    assert response.status_code == 200
    Conformance().check("GetTags", response)
    assert response.json()[0]["id"] == tag.id


def test_base64_body_and_camel_case_keys_as_captured_from_the_sdk(emu: RunningEmulator, images: ImageFactory) -> None:
    """A hand-written body shaped like the captured SDK request is accepted the same way."""
    cv = emu.client()
    project = cv.create_project("Wire")
    tag = cv.create_tag(project.id, "t")
    body = {
        "images": [{"name": "a.jpg", "contents": base64.b64encode(images.jpeg()).decode(), "tagIds": [tag.id]}],
        "tagIds": [tag.id],
    }
    response = requests.post(
        emu.api(f"/projects/{project.id}/images/files"), json=body, headers={"Training-key": "devstack-training-key"}
    )
    assert response.status_code == 200
    Conformance().check("CreateImagesFromFiles", response)
    image = response.json()["images"][0]
    assert image["sourceUrl"] == "a.jpg" and image["image"]["tags"][0]["tagName"] == "t"
