"""Server reflection on `grpc.reflection.v1.ServerReflection` and on `v1alpha`, from one
implementation.

grpcio-reflection serves only `v1alpha`; grpcurl >= 1.8.8, Postman and other clients ask for
`v1` first. The two protocols are the same messages under another package name, field for
field, so one servicer (grpcio-reflection's) answers both: the `v1` method decodes and encodes
with the `v1alpha` classes, which read and write the same bytes. The `v1` file descriptor is
`v1alpha`'s renamed, added to the default pool so that `v1` itself can be listed and
described like any other service.
"""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer  # what `reflection.aio` is

V1ALPHA = reflection.SERVICE_NAME  # grpc.reflection.v1alpha.ServerReflection
V1 = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _add_v1_descriptor() -> None:
    """`v1alpha`'s file under the `v1` package, in the default pool (once per process)."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    old, new = f".{file.package}.", ".grpc.reflection.v1."
    file.name, file.package = _V1_FILE, "grpc.reflection.v1"
    for message in file.message_type:
        for message_field in message.field:
            if message_field.type_name.startswith(old):
                message_field.type_name = new + message_field.type_name[len(old) :]
    for service in file.service:
        for method in service.method:
            method.input_type = new + method.input_type[len(old) :]
            method.output_type = new + method.output_type[len(old) :]
    pool.AddSerializedFile(file.SerializeToString())


def enable(service_names: list[str], server: grpc.aio.Server) -> None:
    """Reflection on both versions, listing `service_names` and the two reflection services."""
    _add_v1_descriptor()
    servicer = ReflectionServicer([*service_names, V1ALPHA, V1])
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        tuple(
            grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler})
            for name in (V1ALPHA, V1)
        )
    )
