// Started by scripts/s3.sh: the package's own command-line entry point is missing from its 4.0.4 release.
// Listens on 127.0.0.1 on the port given (0: any free one) and prints it once it accepts connections.
'use strict';
const S3rver = require('@20minutes/s3rver');

const [port, directory] = process.argv.slice(2);
new S3rver({ address: '127.0.0.1', port: Number(port), directory, silent: true })
  .run()
  .then(({ port: bound }) => console.log(`listening on port ${bound}`))
  .catch((error) => {
    console.error(error);
    process.exit(1);
  });
