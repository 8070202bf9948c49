import { Link } from "react-router";

export default function NotFound() {
  return (
    <main className="grid min-h-[60vh] place-items-center p-6 text-center">
      <div>
        <h1 className="text-2xl font-semibold">Page not found</h1>
        <Link className="mt-3 inline-block text-primary underline" to="/">
          Back to chat
        </Link>
      </div>
    </main>
  );
}
