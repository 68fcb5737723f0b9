"""Django's user admin, with a link from each user to their usage (chat/opsadmin.py)."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.utils.html import format_html

from chat.opsadmin import usage_url

User = get_user_model()


class UserWithUsageAdmin(UserAdmin):
    list_display = (*UserAdmin.list_display, "usage")
    readonly_fields = (*UserAdmin.readonly_fields, "usage")
    fieldsets = (*UserAdmin.fieldsets, ("Usage", {"fields": ("usage",)}))

    @admin.display(description="usage")
    def usage(self, obj) -> str:
        if obj.pk is None:
            return "-"
        return format_html('<a href="{}">Messages and tokens by day</a>', usage_url(user=obj.pk))


admin.site.unregister(User)
admin.site.register(User, UserWithUsageAdmin)
