import { MemoryPanel } from "../components/MemoryPanel";
import { SettingsForm } from "../components/SettingsForm";
import { Card } from "../components/ui/misc";
import { useDefaults } from "../store/defaults";

export default function SettingsPage() {
  const defaults = useDefaults((s) => s.defaults);
  const save = useDefaults((s) => s.save);
  return (
    <div className="mx-auto max-w-2xl space-y-4 p-4 sm:p-6">
      <h1 className="text-xl font-semibold">Settings</h1>
      <Card title="Defaults for new chats">
        <p className="mb-4 text-sm text-muted-foreground">
          New chats start with these settings (kept in this browser). Each chat can override them from its “Chat
          settings” button.
        </p>
        <SettingsForm initial={defaults} submitLabel="Save settings" onSubmit={(_patch, values) => save(values)} />
      </Card>
      <Card title="Memory">
        <MemoryPanel />
      </Card>
    </div>
  );
}
