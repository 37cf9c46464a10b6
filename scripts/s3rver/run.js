// Started by scripts/s3.sh: the package's own command-line entry point is missing from its 4.0.4 release.
// Listens on 127.0.0.1 on the port given (0: any free one) and prints it once it accepts connections.
'use strict';
const S3rver = require('@20minutes/s3rver');

const [port, directory] = process.argv.slice(2);
new S3rver({
  address: '127.0.0.1',
  port: Number(port),
  directory,
  silent: true,
  // The access key is still checked, and a request must carry a well-formed signature, but its value is not: for
  // requests on a bucket (create, list) s3rver signs the path without the trailing slash the AWS SDK for .NET sends
  // ("/bucket/"), so every listing would fail with SignatureDoesNotMatch.
  allowMismatchedSignatures: true,
})
  .run()
  .then(({ port: bound }) => console.log(`listening on port ${bound}`))
  .catch((error) => {
    console.error(error);
    process.exit(1);
  });
