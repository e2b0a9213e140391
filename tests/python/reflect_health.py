"""A client with no generated code: lists a Covenant server's services
through gRPC server reflection, then calls the standard health check
(grpc.health.v1.Health/Check) with request and response types built from
the descriptors the server itself sent.

    reflect_health.py https://127.0.0.1:PORT IDENTITY_DIR [SERVICE ...]

IDENTITY_DIR holds cert.pem, key.pem and ca.pem (any identity: the server
asks every caller for a certificate). Prints one JSON object: the services
reflection lists, and the health status of "" (the server) and of each
SERVICE named.
"""

import json
import sys
from pathlib import Path
from urllib.parse import urlparse

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

TIMEOUT = 10


def main():
    url, identity, services = urlparse(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(identity / "ca.pem").read_bytes(),
        private_key=(identity / "key.pem").read_bytes(),
        certificate_chain=(identity / "cert.pem").read_bytes(),
    )
    # The development server's certificate names localhost and 127.0.0.1.
    channel = grpc.secure_channel(url.netloc, credentials, options=[("grpc.ssl_target_name_override", "localhost")])
    grpc.channel_ready_future(channel).result(timeout=TIMEOUT)

    reflection = ProtoReflectionDescriptorDatabase(channel)
    listed = sorted(reflection.get_services())
    pool = descriptor_pool.DescriptorPool(reflection)
    health = pool.FindServiceByName("grpc.health.v1.Health")
    check = health.FindMethodByName("Check")
    request_type = message_factory.GetMessageClass(check.input_type)
    response_type = message_factory.GetMessageClass(check.output_type)
    status_names = check.output_type.fields_by_name["status"].enum_type.values_by_number
    call = channel.unary_unary(
        f"/{health.full_name}/{check.name}",
        request_serializer=request_type.SerializeToString,
        response_deserializer=response_type.FromString,
    )
    statuses = {}
    for name in [""] + services:
        try:
            answer = call(request_type(service=name), timeout=TIMEOUT)
            statuses[name] = status_names[answer.status].name
        except grpc.RpcError as err:
            statuses[name] = f"error {err.code().name}"
    print(json.dumps({"services": listed, "health": statuses}))


if __name__ == "__main__":
    main()
