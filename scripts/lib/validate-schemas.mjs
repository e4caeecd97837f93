// What Ajv (JSON Schema 2020-12, its default Unicode regular expressions)
// says of message bodies, as a JavaScript publisher would check them
// (tests/tests/contract.rs runs it; scripts/contract installs Ajv beside
// the AsyncAPI parser). Prints, as a JSON array, whether each case's body is
// valid:
//   node validate-schemas.mjs docs/schema cases.json
// where cases.json is [{"kind": "customer", "body": "<the body's text>"}, ...].
import Ajv2020 from 'ajv/dist/2020.js';
import { readFileSync } from 'node:fs';

const [schemas, casesPath] = process.argv.slice(2);
const ajv = new Ajv2020({ strict: true });
const validate = {};
for (const kind of ['customer', 'product', 'rental']) {
  validate[kind] = ajv.compile(JSON.parse(readFileSync(`${schemas}/${kind}.schema.json`, 'utf8')));
}
const valid = (c) => {
  let body;
  try {
    body = JSON.parse(c.body);
  } catch {
    return false;
  }
  return validate[c.kind](body);
};
console.log(JSON.stringify(JSON.parse(readFileSync(casesPath, 'utf8')).map(valid)));
