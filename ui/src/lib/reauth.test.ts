import { afterEach, describe, expect, it } from "vitest";
import { ApiError } from "./api";
import { describeOAuthError, rememberReturn, takeReturn } from "./oauth";
import { confirmNeed, hasPassword, reauthProviders } from "./reauth";

const CONFIGURED = [
  { name: "corp", label: "Corp SSO" },
  { name: "github", label: "GitHub" },
];

afterEach(() => sessionStorage.clear());

describe("confirming a sensitive action", () => {
  it("asks for the password unless the server says the account has none", () => {
    expect(hasPassword({ has_password: true })).toBe(true);
    expect(hasPassword({})).toBe(true); // an older server: the password, as before
    expect(hasPassword({ has_password: false })).toBe(false);
  });

  it("reads reauth_required and password_required, and nothing else", () => {
    const msg = "this account has no password, so this needs a recent sign-in: sign in again with Corp SSO";
    expect(confirmNeed(new ApiError(403, "reauth_required", msg))).toEqual({ kind: "reauth", message: msg });
    expect(confirmNeed(new ApiError(403, "password_required", "confirm with your password"))?.kind).toBe("password");
    expect(confirmNeed(new ApiError(403, "invalid_credentials", "the password is wrong"))).toBeNull();
    expect(confirmNeed(new ApiError(401, "reauth_required", "x"))).toBeNull();
    expect(confirmNeed(new Error("offline"))).toBeNull();
  });

  it("offers the linked providers in their order, with labels; all configured when none is", () => {
    expect(reauthProviders(["github", "corp"], CONFIGURED).map((p) => p.label)).toEqual(["GitHub", "Corp SSO"]);
    expect(reauthProviders(["gone", "corp"], CONFIGURED).map((p) => p.name)).toEqual(["corp"]);
    expect(reauthProviders(["gone"], CONFIGURED)).toEqual(CONFIGURED);
    expect(reauthProviders(undefined, [])).toEqual([]);
  });
});

describe("the OAuth callback's way back", () => {
  it("returns to the remembered page once, and only to a path of this app", () => {
    rememberReturn("/account/data");
    expect(takeReturn()).toBe("/account/data");
    expect(takeReturn()).toBe("/");
    for (const bad of ["//evil.example/x", "https://evil.example", "/\\evil.example", "account"]) {
      rememberReturn(bad);
      expect(takeReturn()).toBe("/");
    }
  });

  it("explains a replayed code", () => {
    expect(describeOAuthError("oauth_code_reused")).toMatch(/already been used.*sign in with the provider again/);
  });
});
