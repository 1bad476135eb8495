// Reads access tokens, one a line, and answers each with a line of JSON:
// whether jose verifies it with the key set at the JWKS URL given as the
// first argument. One key set object serves every line, caching keys as a
// Node service using jose would.
import { createInterface } from 'node:readline';
import { createRemoteJWKSet, jwtVerify } from 'jose';

const keys = createRemoteJWKSet(new URL(process.argv[2]));
const options = { issuer: 'authd', audience: 'authd', typ: 'at+jwt', algorithms: ['EdDSA'] };

for await (const token of createInterface({ input: process.stdin })) {
  try {
    const { payload, protectedHeader } = await jwtVerify(token, keys, options);
    console.log(JSON.stringify({ ok: true, kid: protectedHeader.kid, sub: payload.sub }));
  } catch (err) {
    console.log(JSON.stringify({ ok: false, code: err.code ?? String(err) }));
  }
}
